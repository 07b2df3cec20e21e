"""Dashboard at scale: the coordinator list page at 10k / 100k / 1M submissions.

Usage (from the repository root):

    .venv/bin/python -m bench.dashboard --database sqlite postgresql --sizes 10000 100000 1000000

For each database and size, a development instance is seeded with ``flask dev seed`` (SQLite
instances are kept in ``--data-dir`` and reused; PostgreSQL gets a throwaway cluster), its
statistics refreshed (ANALYZE), then the list page is requested in this process through the
Flask test client, signed in as a coordinator (the staff session is set directly, as a
sign-in would leave it). Server-side time per request, p50/p95, and the number of SQL
statements per request (counted by an engine event) are reported for:

- the same-run baselines: ``GET /readyz`` (one ``SELECT 1`` and a key check) and a minimal
  signed-in staff page (the consent text: session check, no submissions query);
- the list with no filter and with each common filter (status, cancer type, a 30-day date
  range, age band, assignee, unassigned, source, status + cancer type, assignee + status, and
  status + a rare cancer type);
- deep pages: the next-page cursor followed 50 times, unfiltered and by status.

Results go to bench/results/dashboard-<timestamp>.json with the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import percentile
from bench.scale import (
    Instance,
    add_instance_options,
    each_instance,
    machine_record,
    sign_in_directly,
    write_results,
)


class Probe:
    """A signed-in test client on one instance, counting SQL statements per request."""

    def __init__(self, instance: Instance) -> None:
        from sqlalchemy import event, select

        from intake import create_app
        from intake.extensions import db
        from intake.models import User

        self.app = create_app(instance.config(INTAKE_LOG_LEVEL="WARNING"))
        self.statements = 0
        with self.app.app_context():
            engine = db.engine

            @event.listens_for(engine, "before_cursor_execute")
            def _count(*_args: Any) -> None:
                self.statements += 1

            user = db.session.scalars(
                select(User).where(User.email == "bench-coordinator-1@example.org")
            ).one()
            self.user_id = user.id
            db.session.remove()
        self.client = self.app.test_client()
        sign_in_directly(self.app, self.client, self.user_id)

    def get(self, path: str) -> tuple[float, int, str]:
        before = self.statements
        started = time.perf_counter()
        response = self.client.get(path)
        elapsed = (time.perf_counter() - started) * 1000
        body = response.get_data(as_text=True)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code}")
        return elapsed, self.statements - before, body

    def close(self) -> None:
        from intake.extensions import db

        with self.app.app_context():
            db.session.remove()
            db.engine.dispose()


def summary(times: list[float], statements: list[int]) -> dict[str, Any]:
    return {
        "requests": len(times),
        "p50_ms": percentile(times, 0.50),
        "p95_ms": percentile(times, 0.95),
        "max_ms": max(times),
        "statements": statistics.median(statements),
    }


NEXT = 'rel="next"'


def next_link(body: str) -> str | None:
    import html
    import re

    match = re.search(r'<a href="([^"]+)" rel="next">', body)
    return html.unescape(match.group(1)) if match else None


def scenarios(probe: Probe, ref_day: datetime) -> dict[str, str]:
    start = (ref_day - timedelta(days=200)).date()
    end = (ref_day - timedelta(days=170)).date()
    version = "2026-11-v1"
    return {
        "baseline: /readyz (SELECT 1)": "/readyz",
        "baseline: minimal staff page": f"/coordinator/consent/{version}/en",
        "list: no filter": "/coordinator/",
        "list: status=in_review": "/coordinator/?status=in_review",
        "list: status=new": "/coordinator/?status=new",
        "list: cancer_type=breast": "/coordinator/?cancer_type=breast",
        "list: cancer_type=merkel (rare)": "/coordinator/?cancer_type=merkel",
        "list: 30-day range": "/coordinator/?"
        + urlencode({"received_from": start.isoformat(), "received_to": end.isoformat()}),
        "list: age_band=80+": "/coordinator/?age_band=80%2B",
        "list: assignee=coordinator": f"/coordinator/?assignee={probe.user_id}",
        "list: unassigned": "/coordinator/?assignee=none",
        "list: source=newsletter": "/coordinator/?source=newsletter",
        "list: status+cancer_type": "/coordinator/?status=contacted&cancer_type=lung_nsclc",
        "list: assignee+status": f"/coordinator/?assignee={probe.user_id}&status=in_review",
        "list: status+cancer_type (rare)": "/coordinator/?status=referred&cancer_type=merkel",
    }


def measure(instance: Instance, repeat: int, deep: int) -> dict[str, Any]:
    probe = Probe(instance)
    results: dict[str, Any] = {}
    try:
        for name, path in scenarios(probe, datetime.now(UTC)).items():
            for _ in range(2):
                probe.get(path)  # warm: templates compiled, pages cached
            times, counts = [], []
            for _ in range(repeat):
                elapsed, statements, _body = probe.get(path)
                times.append(elapsed)
                counts.append(statements)
            results[name] = summary(times, counts)
        for name, start in (
            ("deep: 50 pages, no filter", "/coordinator/"),
            ("deep: 50 pages, status=not_eligible", "/coordinator/?status=not_eligible"),
        ):
            times, counts, pages = [], [], 0
            link: str | None = start
            while link and pages < deep:
                elapsed, statements, body = probe.get(link)
                times.append(elapsed)
                counts.append(statements)
                link, pages = next_link(body), pages + 1
            results[name] = summary(times, counts) | {"pages": pages}
    finally:
        probe.close()
    base = results["baseline: minimal staff page"]["p95_ms"]
    for values in results.values():
        values["p95_vs_minimal_page"] = values["p95_ms"] / base if base else None
    return results


def profile_lists(instance: Instance, repeat: int, top: int) -> str:
    """cProfile over every list scenario, ``repeat`` requests each: where a list page spends."""
    import cProfile
    import io
    import pstats

    from bench.profile import by_package

    probe = Probe(instance)
    try:
        paths = [p for n, p in scenarios(probe, datetime.now(UTC)).items() if n.startswith("list")]
        for path in paths:
            probe.get(path)  # warm
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [probe.get(path) for path in paths for _ in range(repeat)])
    finally:
        probe.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    return out.getvalue() + "\n" + by_package(profiler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_instance_options(parser, [10_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=30, help="requests per scenario")
    parser.add_argument("--deep", type=int, default=50, help="pages followed by cursor")
    parser.add_argument("--note", default="")
    parser.add_argument(
        "--profile", action="store_true", help="also profile the list pages at each size"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()

    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "note": args.note,
        "runs": [],
    }
    pg_versions: list[str] = []
    for instance in each_instance(args, pg_versions):
        database = instance.database
        print(f"measuring {database} at {instance.rows:,} rows", flush=True)
        report["runs"].append(
            {
                "database": database,
                "rows": instance.rows,
                "seed_seconds": instance.seed_seconds,
                "scenarios": measure(instance, args.repeat, args.deep),
            }
        )
        if args.profile:
            print(f"profile of the list pages, {database} at {instance.rows:,} rows")
            print(profile_lists(instance, 10, 30), flush=True)
    report["machine"] = machine_record(next(iter(pg_versions), None), load_before)
    names = list(report["runs"][0]["scenarios"])
    columns = [(run["database"], run["rows"]) for run in report["runs"]]
    print("p50 / p95 ms (SQL statements per request)\n")
    print("| scenario | " + " | ".join(f"{d} {r:,}" for d, r in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name in names:
        cells = []
        for run in report["runs"]:
            s = run["scenarios"][name]
            cells.append(f"{s['p50_ms']:.1f} / {s['p95_ms']:.1f} ({s['statements']:g})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    worst = {
        (run["database"], run["rows"]): max(
            s["p95_ms"] for n, s in run["scenarios"].items() if not n.startswith("baseline")
        )
        for run in report["runs"]
    }
    print(
        "\nworst list p95 (target ≤ 50 ms): "
        + ", ".join(f"{d} {r:,}: {v:.1f} ms" for (d, r), v in worst.items())
    )
    write_results("dashboard", report)


if __name__ == "__main__":
    main()
