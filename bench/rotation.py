"""Key rotation of N rows against the raw open+seal rate, and resumption after SIGKILL.

Usage (from the repository root):

    .venv/bin/python -m bench.rotation --database sqlite postgresql --sizes 100000 1000000
    .venv/bin/python -m bench.rotation --database sqlite --sizes 100000 --kill 5

For each size, a seeded instance (``bench/scale.py``; SQLite instances are copied first, so
the kept one stays on its key), then:

- baseline, same run: ``Keyring.open`` then ``Keyring.seal`` of one real row, in a loop;
- ``flask --app intake keys rotate --new-key`` (its default ``--batch-size``) as a subprocess,
  timed; rows/s ÷ (open+seal)/s is the ratio (target ≥ 0.5);
- with ``--kill K``: the rotation is SIGKILLed K times at random moments (0.5 to 3 s after
  each start) and started again (``keys rotate`` without ``--new-key``) until one run ends
  by itself; the time then counts every attempt.

Afterwards every sealed row must be on the new key and open with the keyring, and
``audit verify`` must pass. Results: bench/results/rotation-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import BIN, ROOT
from bench.scale import (
    Instance,
    add_instance_options,
    each_instance,
    machine_record,
    write_results,
)


def open_seal_rate(instance: Instance, seconds: float) -> float:
    from sqlalchemy import select

    from intake import create_app
    from intake.extensions import db
    from intake.keys import current_keyring
    from intake.models import Submission
    from intake.sealing import SealedBlob

    app = create_app(instance.config())
    with app.app_context():
        keyring = current_keyring()
        row = db.session.scalars(
            select(Submission).where(Submission.sealed_payload.is_not(None)).limit(1)
        ).one()
        blob = SealedBlob(row.key_id, row.wrapped_key, row.sealed_payload)  # type: ignore[arg-type]
        binding = row.seal_binding()
        db.session.remove()
        db.engine.dispose()

    def once() -> None:
        keyring.seal(keyring.open(blob, binding=binding), binding=binding)

    for _ in range(30):
        once()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(50):
            once()
        count += 50
    return count / (time.perf_counter() - started)


def rotate(instance: Instance, kills: int, rng: random.Random) -> dict[str, Any]:
    command = [str(BIN / "flask"), "--app", "intake", "keys", "rotate"]
    attempts, killed, started = 0, 0, time.monotonic()
    first = True
    while True:
        attempts += 1
        process = subprocess.Popen(
            [*command, *(["--new-key"] if first else [])],
            cwd=ROOT,
            env=instance.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if killed < kills:
            try:
                process.wait(timeout=rng.uniform(0.5, 3.0))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed += 1
                # --new-key ran only if its key file exists; after that, resume without it.
                first = first and not _has_second_key(instance)
                continue
        output, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"keys rotate exited {process.returncode}: {output[-2000:]}")
        if "rows to move onto" in output:
            first = False
        break
    return {"seconds": time.monotonic() - started, "attempts": attempts, "kills": killed}


def _has_second_key(instance: Instance) -> bool:
    return len(list((instance.folder / "keys").glob("*.public.json"))) > 1


def check(instance: Instance) -> dict[str, Any]:
    """Every sealed row is on the newest key and opens; the audit chain verifies."""
    from sqlalchemy import select

    from intake import audit, create_app
    from intake.extensions import db
    from intake.keys import current_keyring
    from intake.models import Submission
    from intake.sealing import SealedBlob

    app = create_app(instance.config())
    opened = off_key = 0
    with app.app_context():
        keyring = current_keyring()
        target = keyring.sealing_key_id
        session = db.session()
        query = select(
            Submission.id, Submission.key_id, Submission.wrapped_key, Submission.sealed_payload
        ).where(Submission.sealed_payload.is_not(None))
        for row in session.execute(query.execution_options(yield_per=2000)):
            off_key += row.key_id != target
            keyring.open(
                SealedBlob(row.key_id, row.wrapped_key, row.sealed_payload),
                binding=f"submissions:{row.id}",
            )
            opened += 1
        chain = audit.verify_chain(session)
        db.session.remove()
        db.engine.dispose()
    return {
        "opened": opened,
        "not_on_new_key": off_key,
        "audit_ok": chain.ok,
        "audit_rows": chain.checked,
    }


def rotate_and_check(
    kept: Instance, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    """Rotate ``kept`` (a copy of it on SQLite, so the kept one stays as seeded) and check it."""
    database, work, scratch = kept.database, kept, None
    if kept.url is None:
        scratch = Path(tempfile.mkdtemp(prefix="intake-rotation-"))
        shutil.copytree(kept.folder, scratch / "instance")
        work = Instance(database, kept.rows, scratch / "instance", None)
    try:
        print(f"rotating {kept.rows:,} on {database}", flush=True)
        baseline = open_seal_rate(work, args.seconds)
        result = rotate(work, args.kill, rng)
        checked = check(work)
        rows = checked["opened"]  # the sealed rows (tombstones have nothing to move)
        return result | {
            "database": database,
            "size": rows,
            "raw_open_seal_per_s": baseline,
            "rows_per_s": rows / result["seconds"],
            "rotation_vs_open_seal": rows / result["seconds"] / baseline,
            "check": checked,
        }
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_instance_options(parser, [100_000, 1_000_000])
    parser.add_argument("--kill", type=int, default=0, help="SIGKILL the rotation this often")
    parser.add_argument("--seconds", type=float, default=2.0, help="baseline measurement")
    parser.add_argument("--random-seed", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.random_seed)

    load_before = os.getloadavg()
    runs, pg_versions = [], list[str]()
    for kept in each_instance(args, pg_versions):
        runs.append(rotate_and_check(kept, args, rng))
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": machine_record(next(iter(pg_versions), None), load_before),
        "runs": runs,
    }
    print("| database | rows | kills | seconds | rows/s | raw open+seal/s | ratio | all open |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        c = r["check"]
        ok = c["not_on_new_key"] == 0 and c["audit_ok"]
        print(
            f"| {r['database']} | {r['size']:,} | {r['kills']} | {r['seconds']:.1f} | "
            f"{r['rows_per_s']:,.0f} | {r['raw_open_seal_per_s']:,.0f} | "
            f"{r['rotation_vs_open_seal']:.2f}x | {'yes' if ok else 'NO'} "
            f"({c['opened']:,} opened, audit {'ok' if c['audit_ok'] else 'BROKEN'}) |"
        )
    write_results("rotation", report)


if __name__ == "__main__":
    main()
