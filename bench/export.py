"""Export: the CSV of N submissions against the raw HPKE open rate, and its peak memory.

Usage (from the repository root):

    .venv/bin/python -m bench.export --database sqlite postgresql --sizes 10000 100000

For each size, a seeded instance (``bench/scale.py``), then ONE fresh subprocess per size
(so peak RSS belongs to that export alone) that:

1. measures the raw open rate: ``Keyring.open`` of one real row's blob in a tight loop
   (the HPKE unwrap of its data key plus the AES-GCM payload), the same-run baseline;
2. signs in as the demo admin (session set directly), POSTs ``/coordinator/export`` with a
   reason and the CSRF token, and reads the streamed CSV to the end through the test client
   without keeping it, counting rows and bytes;
3. reports rows/s, rows/s ÷ open/s (target ≥ 0.7), the same ratio in the process's CPU time
   (steadier when other work shares the cores), and VmHWM (peak RSS) of the process.

Target: peak RSS at 100k within 10% of 10k. Results: bench/results/export-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import ROOT
from bench.scale import (
    Instance,
    add_instance_options,
    each_instance,
    machine_record,
    sign_in_directly,
    write_results,
)


def vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def child(config: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Runs in a fresh interpreter: baseline open rate, then the export through the view."""
    import re

    from sqlalchemy import select

    from intake import create_app
    from intake.extensions import db
    from intake.keys import current_keyring
    from intake.models import Submission, User
    from intake.sealing import SealedBlob

    app = create_app(config)
    with app.app_context():
        keyring = current_keyring()
        row = db.session.scalars(
            select(Submission).where(Submission.sealed_payload.is_not(None)).limit(1)
        ).one()
        blob = SealedBlob(row.key_id, row.wrapped_key, row.sealed_payload)  # type: ignore[arg-type]
        binding = row.seal_binding()
        admin = db.session.scalars(select(User).where(User.role == "admin")).first()
        assert admin is not None, "dev init makes the demo admin"
        uid = admin.id
        db.session.remove()
    for _ in range(50):
        keyring.open(blob, binding=binding)
    count, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            keyring.open(blob, binding=binding)
        count += 100
    open_rate = count / (time.perf_counter() - started)
    open_cpu_rate = count / (time.process_time() - cpu_started)
    rss_before = vm_hwm_kib()

    client = app.test_client()
    sign_in_directly(app, client, uid)
    page = client.get("/coordinator/?cancer_type=merkel").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token on the list page"
    started, cpu_started = time.perf_counter(), time.process_time()
    response = client.post(
        "/coordinator/export",
        data={"csrf_token": match.group(1), "reason": "quality_review"},
        buffered=False,
    )
    assert response.status_code == 200, response.status_code
    lines = size = 0
    for chunk in response.response:
        data = chunk if isinstance(chunk, bytes) else chunk.encode()
        size += len(data)
        lines += data.count(b"\r\n")
    response.close()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    rows = lines - 1  # the header
    return {
        "rows": rows,
        "bytes": size,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "raw_open_per_s": open_rate,
        "export_vs_open": rows / elapsed / open_rate,
        # The same ratio in CPU time of this process: steadier on a shared, loaded machine.
        "export_vs_open_cpu": rows / cpu / open_cpu_rate,
        "vm_hwm_kib_before_export": rss_before,
        "vm_hwm_kib": vm_hwm_kib(),
    }


def run_child(instance: Instance, seconds: float) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.export",
            "--child",
            json.dumps(instance.config()),
            "--seconds",
            str(seconds),
        ],
        cwd=ROOT,
        env=instance.env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_instance_options(parser, [10_000, 100_000])
    parser.add_argument("--seconds", type=float, default=2.0, help="open-rate measurement")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.seconds)))
        return

    load_before = os.getloadavg()
    runs, pg_versions = [], list[str]()
    for instance in each_instance(args, pg_versions):
        print(f"exporting {instance.rows:,} on {instance.database}", flush=True)
        runs.append(
            {"database": instance.database, "size": instance.rows}
            | run_child(instance, args.seconds)
        )
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": machine_record(next(iter(pg_versions), None), load_before),
        "runs": runs,
    }
    print(
        "| database | submissions | rows exported | rows/s | raw open/s | ratio | ratio (CPU) "
        "| peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['database']} | {r['size']:,} | {r['rows']:,} | {r['rows_per_s']:,.0f} | "
            f"{r['raw_open_per_s']:,.0f} | {r['export_vs_open']:.2f}x | "
            f"{r['export_vs_open_cpu']:.2f}x | "
            f"{r['vm_hwm_kib'] / 1024:.1f} |"
        )
    for database in args.database:
        sizes = [r for r in runs if r["database"] == database]
        if len(sizes) > 1:
            growth = sizes[-1]["vm_hwm_kib"] / sizes[0]["vm_hwm_kib"] - 1
            print(
                f"{database}: peak RSS {sizes[-1]['size']:,} vs {sizes[0]['size']:,}: "
                f"{growth:+.1%} (target within ±10%)"
            )
    write_results("export", report)


if __name__ == "__main__":
    main()
