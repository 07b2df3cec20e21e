"""CPU per request and where it goes: whole visits through the Flask test client, profiled.

Usage (from the repository root):

    .venv/bin/python -m bench.profile --visits 300            # Intake and the floor, SQLite
    .venv/bin/python -m bench.profile --visits 300 --top 40   # more functions
    .venv/bin/python -m bench.profile --only intake --pstats /tmp/intake.pstats

No HTTP server and no other process: one interpreter plays ``--visits`` whole visits (GET the
form, POST it, GET the confirmation) against Intake (a fresh ``flask dev init`` instance in a
temporary folder, rate limits counting but never biting) and against the floor app, after a
warm-up of 30 visits each. It prints the CPU time per request kind (``time.process_time``,
so waiting for nothing counts) with the same-run ratio to the floor, then cProfile's top
functions for Intake's visits by their own time and by cumulative time. It complements the
sampling profiles of gunicorn workers under ``bench.load`` (see bench/README.md), which also
show lock waits; this one isolates CPU inside the app.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import ROOT, hidden_fields, intake_environment, marker, run_flask, valid_answers

KINDS = ("form", "post", "confirmation")


def intake_client(folder: Path, overrides: dict[str, Any]) -> Any:
    env = intake_environment(folder, None)
    run_flask(env, "dev", "init")
    from intake import create_app

    limit = env["INTAKE_SUBMIT_RATE_LIMIT"]
    app = create_app(
        {
            "INSTANCE_PATH": str(folder),
            "ENV": "development",
            "SUBMIT_RATE_LIMIT": limit,
            "WITHDRAW_RATE_LIMIT": limit,
            "LOG_LEVEL": "WARNING",
            **overrides,
        }
    )
    return app.test_client()


def floor_client(folder: Path) -> Any:
    from bench import floor_app

    url = f"sqlite:///{folder / 'floor.sqlite3'}"
    floor_app.init_db(url)
    return floor_app.create_app(url, secrets.token_urlsafe(32)).test_client()


def one_visit(client: Any, clock: dict[str, float]) -> None:
    """GET /, POST it filled in, follow the 303; CPU time per step added to ``clock``."""
    started = time.process_time()
    page = client.get("/")
    assert page.status_code == 200, page.status_code
    fields = {**hidden_fields(page.get_data(as_text=True)), **valid_answers(marker())}
    step = time.process_time()
    clock["form"] += step - started
    answer = client.post("/", data=fields)
    assert answer.status_code == 303, (answer.status_code, answer.get_data(as_text=True)[:500])
    posted = time.process_time()
    clock["post"] += posted - step
    done = client.get(answer.headers["Location"])
    assert done.status_code == 200, done.status_code
    clock["confirmation"] += time.process_time() - posted


def measure(client: Any, visits: int, profiler: cProfile.Profile | None = None) -> dict[str, float]:
    for _ in range(30):
        one_visit(client, dict.fromkeys(KINDS, 0.0))
    clock = dict.fromkeys(KINDS, 0.0)
    run: Callable[[], None] = lambda: [one_visit(client, clock) for _ in range(visits)]  # noqa: E731
    if profiler is None:
        run()
    else:
        profiler.runcall(run)
    return {kind: clock[kind] / visits * 1000 for kind in KINDS}


def package_of(filename: str) -> str:
    """Who owns a profiled function: a top-level package, our code, or C built-ins."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith("~") or filename.startswith("<"):
        return "(built-in / C)"
    if str(ROOT) in filename:
        relative = filename.split(str(ROOT) + "/", 1)[1]
        return "/".join(relative.split("/")[:2]) if relative.startswith("intake/") else relative
    return "(stdlib)"


def by_package(profiler: cProfile.Profile) -> str:
    """Own time (not cumulative) summed per package: where the CPU is actually spent."""
    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {}
    for (filename, _line, _name), (_cc, _nc, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        totals[package_of(filename)] = totals.get(package_of(filename), 0.0) + own
    whole = sum(totals.values()) or 1.0
    lines = ["own time by package (share of Intake's profiled visits):"]
    for package, own in sorted(totals.items(), key=lambda item: -item[1])[:20]:
        lines.append(f"  {100 * own / whole:5.1f}%  {package}")
    return "\n".join(lines)


def report(profiler: cProfile.Profile, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=300)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--only", choices=["intake", "floor"])
    parser.add_argument("--pstats", type=Path, help="also write Intake's profile here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a create_app setting for Intake, e.g. --set RATELIMIT_ENABLED=false (to compare)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="intake-profile-") as tmp:
        folder = Path(tmp)
        results: dict[str, dict[str, float]] = {}
        if args.only != "intake":
            results["floor"] = measure(floor_client(folder), args.visits)
        if args.only != "floor":
            overrides = {
                key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)
            }
            client = intake_client(folder / "instance", overrides)
            results["intake"] = measure(client, args.visits)  # unprofiled: the CPU numbers
            profiler = cProfile.Profile()
            measure(client, args.visits, profiler)
            print(report(profiler, args.top))
            print(by_package(profiler))
            if args.pstats:
                profiler.dump_stats(args.pstats)
    print(f"CPU ms per request, {args.visits} visits each (process_time):")
    print(f"{'':14}" + "".join(f"{kind:>14}" for kind in (*KINDS, "visit")))
    for name, times in results.items():
        row = [*times.values(), sum(times.values())]
        print(f"{name:14}" + "".join(f"{value:14.2f}" for value in row))
    if len(results) == 2:
        ratios = [results["intake"][k] / results["floor"][k] for k in KINDS]
        total = sum(results["intake"].values()) / sum(results["floor"].values())
        print(f"{'intake/floor':14}" + "".join(f"{r:13.2f}x" for r in [*ratios, total]))


if __name__ == "__main__":
    main()
