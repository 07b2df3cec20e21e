"""Sealing throughput: Intake's envelope against raw HPKE, measured in the same run.

Usage: .venv/bin/python bench/sealing.py [--seconds 2] [--payload-bytes 400]

For each suite it times, on one core:
  raw HPKE encrypt / decrypt of the payload (the baseline),
  Keyring.seal / open / rewrap (what Intake does per record),
and prints rates plus the ratio of each Intake operation to its baseline. Results are written
to bench/results/sealing-<timestamp>.json with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cryptography
from cryptography.hazmat.primitives import hpke

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from intake.sealing import SUITES, Keyring, generate_key

BINDING = "submissions:0192f7a0-0000-7000-8000-000000000001"


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per second, repeating ``operation`` for about ``seconds`` after a warm-up."""
    for _ in range(50):
        operation()
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            operation()
        count += 100
    return count / (time.perf_counter() - start)


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "platform": platform.platform(),
    }


def bench_suite(suite_name: str, payload: bytes, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        keys = Path(folder)
        generate_key(keys, suite=suite_name)
        keyring = Keyring.load(keys, with_private=True)
        pair = keyring._pairs[keyring.sealing_key_id]
        suite: hpke.Suite = {
            "mlkem768-x25519": hpke.Suite(
                hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
            ),
            "x25519": hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
        }[suite_name]
        raw_ciphertext = suite.encrypt(payload, pair.public, info=b"bench")
        blob = keyring.seal(payload, binding=BINDING)
        generate_key(keys, suite=suite_name)
        rotated = Keyring.load(keys, with_private=True)
        results = {
            "raw_hpke_encrypt": rate(
                lambda: suite.encrypt(payload, pair.public, info=b"bench"), seconds
            ),
            "raw_hpke_decrypt": rate(
                lambda: suite.decrypt(raw_ciphertext, pair.private, info=b"bench"), seconds
            ),
            "seal": rate(lambda: keyring.seal(payload, binding=BINDING), seconds),
            "open": rate(lambda: keyring.open(blob, binding=BINDING), seconds),
            "rewrap": rate(lambda: rotated.rewrap(blob, binding=BINDING), seconds),
        }
        results["seal_vs_raw_encrypt"] = results["seal"] / results["raw_hpke_encrypt"]
        results["open_vs_raw_decrypt"] = results["open"] / results["raw_hpke_decrypt"]
        results["rewrap_vs_raw_open_plus_seal"] = results["rewrap"] / (
            1 / (1 / results["raw_hpke_decrypt"] + 1 / results["raw_hpke_encrypt"])
        )
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--payload-bytes", type=int, default=400)
    args = parser.parse_args()
    payload = secrets.token_bytes(args.payload_bytes)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "payload_bytes": args.payload_bytes,
        "suites": {name: bench_suite(name, payload, args.seconds) for name in SUITES},
    }
    print(
        f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"Python {report['machine']['python']}, cryptography {report['machine']['cryptography']}"
    )
    print(f"payload: {args.payload_bytes} bytes\n")
    header = ["suite", "raw encrypt/s", "seal/s", "ratio", "raw decrypt/s", "open/s", "ratio"]
    header += ["rewrap/s", "vs raw open+seal"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, r in report["suites"].items():
        cells = [
            name,
            f"{r['raw_hpke_encrypt']:,.0f}",
            f"{r['seal']:,.0f}",
            f"{r['seal_vs_raw_encrypt']:.2f}x",
            f"{r['raw_hpke_decrypt']:,.0f}",
            f"{r['open']:,.0f}",
            f"{r['open_vs_raw_decrypt']:.2f}x",
            f"{r['rewrap']:,.0f}",
            f"{r['rewrap_vs_raw_open_plus_seal']:.2f}x",
        ]
        print("| " + " | ".join(cells) + " |")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"sealing-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nwritten to {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
    )


if __name__ == "__main__":
    main()
