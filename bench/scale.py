"""Seeded development instances at 10k / 100k / 1M rows, shared by the scale benchmarks.

``bench/dashboard.py``, ``bench/export.py``, ``bench/rotation.py`` and ``bench/seed.py`` use it.
An instance is a folder made by ``flask dev init`` (secret, keyring, schema) plus staff
accounts, filled by ``flask --app intake dev seed N`` run as a subprocess, exactly as a person
would run it; the seeding time is measured on the way. SQLite instances live under
``--data-dir`` and are reused by later runs (``--fresh`` remakes them); PostgreSQL ones live in
a throwaway cluster (``bench.load.PgCluster``) made for the run and removed at its end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.load import (
    RESULTS,
    ROOT,
    PgCluster,
    clean_environment,
    machine,
    postgres_bin,
    run_flask,
)

DEFAULT_DATA_DIR = Path("/tmp/intake-bench-data")
STAFF = 4  # coordinators made before seeding, so the seed assigns submissions to them
STAFF_PASSWORD = "bench-password-not-secret-0123"


@dataclass
class Instance:
    database: str
    rows: int
    folder: Path  # the instance folder (config.toml, keys/, intake.sqlite3)
    url: str | None  # None: the instance's own SQLite file
    seed_seconds: float | None = None  # None: reused, not seeded in this run

    @property
    def env(self) -> dict[str, str]:
        env = clean_environment(
            INTAKE_INSTANCE_PATH=str(self.folder),
            INTAKE_ENV="development",
            INTAKE_LOG_LEVEL="WARNING",
        )
        if self.url:
            env["INTAKE_DATABASE_URL"] = self.url
        return env

    def config(self, **extra: Any) -> dict[str, Any]:
        """``create_app`` settings for this instance, in this process."""
        config: dict[str, Any] = {"INSTANCE_PATH": str(self.folder), "ENV": "development"}
        if self.url:
            config["DATABASE_URL"] = self.url
        config.update(extra)
        return config

    def engine_url(self) -> str:
        return self.url or f"sqlite:///{self.folder / 'intake.sqlite3'}"

    def flask(self, *args: str, timeout: float | None = None) -> str:
        return run_flask(self.env, *args, timeout=timeout)


def _make_staff(instance: Instance) -> None:
    from intake import accounts, create_app
    from intake.extensions import db

    app = create_app(instance.config())
    with app.app_context():
        for number in range(1, STAFF + 1):
            email = f"bench-coordinator-{number}@example.org"
            if accounts.find_user(db.session(), email) is None:
                accounts.create_user(
                    db.session(), email, "coordinator", STAFF_PASSWORD, actor="cli:bench"
                )
        db.session.commit()
        db.session.remove()
        db.engine.dispose()


def analyze(instance: Instance) -> None:
    """Fresh planner statistics, as a database in service would have (autovacuum, optimize)."""
    engine = create_engine(instance.engine_url())
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE")
            )
        else:
            connection.execute(text("ANALYZE"))
            connection.commit()
    engine.dispose()


def count_rows(instance: Instance) -> int:
    engine = create_engine(instance.engine_url())
    with engine.connect() as connection:
        rows = int(connection.execute(text("SELECT count(*) FROM submissions")).scalar_one())
    engine.dispose()
    return rows


def prepare(
    instance: Instance, *, batch: int = 5000, seed: int = 42, days: int = 700, reuse: bool = True
) -> Instance:
    """dev init, staff, dev seed (timed), ANALYZE. A finished SQLite instance is reused."""
    marker = instance.folder.parent / "seeded.json"
    if reuse and marker.exists() and instance.url is None:
        recorded = json.loads(marker.read_text())
        if recorded.get("rows") == instance.rows:
            instance.flask("db", "upgrade")  # a reused instance gets the newest schema
            return instance
    if instance.url is None and instance.folder.parent.exists():
        shutil.rmtree(instance.folder.parent)
    instance.folder.mkdir(parents=True, exist_ok=True)
    instance.flask("dev", "init")
    _make_staff(instance)
    print(f"  seeding {instance.rows:,} rows on {instance.database} ...", flush=True)
    started = time.monotonic()
    instance.flask(
        "dev",
        "seed",
        str(instance.rows),
        "--batch",
        str(batch),
        "--seed",
        str(seed),
        "--days",
        str(days),
    )
    instance.seed_seconds = time.monotonic() - started
    print(
        f"  seeded in {instance.seed_seconds:.1f} s "
        f"({instance.rows / instance.seed_seconds:,.0f} rows/s)",
        flush=True,
    )
    analyze(instance)
    if instance.url is None:
        marker.write_text(
            json.dumps({"rows": instance.rows, "seed_seconds": instance.seed_seconds}) + "\n"
        )
    return instance


@contextmanager
def instances(
    database: str,
    sizes: list[int],
    data_dir: Path,
    *,
    fresh: bool = False,
    pg_durable: bool = True,
    batch: int = 5000,
    days: int = 700,
) -> Iterator[tuple[list[Instance], str | None]]:
    """Seeded instances of each size on ``database``; yields them and the PostgreSQL version."""
    cluster: PgCluster | None = None
    try:
        made: list[Instance] = []
        version = None
        if database == "postgresql":
            bin_dir = postgres_bin()
            if bin_dir is None:
                sys.exit("PostgreSQL is not installed: apt-get install postgresql")
            cluster = PgCluster(bin_dir, durable=pg_durable).start()
            version = cluster.version()
        for size in sizes:
            if cluster is not None:
                url = cluster.createdb(f"intake_{size}")
                folder = Path(cluster.base) / f"instance-{size}-{secrets.token_hex(4)}"
                instance = Instance(database, size, folder, url)
            else:
                instance = Instance(database, size, data_dir / f"sqlite-{size}" / "instance", None)
            made.append(prepare(instance, batch=batch, days=days, reuse=not fresh))
        yield made, version
    finally:
        if cluster is not None:
            cluster.destroy()


def add_instance_options(parser: argparse.ArgumentParser, sizes: list[int]) -> None:
    """The options every scale benchmark takes to choose its seeded instances."""
    parser.add_argument(
        "--database", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=sizes)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--fresh", action="store_true", help="reseed kept SQLite instances")
    parser.add_argument("--pg-no-fsync", action="store_true")


def each_instance(args: argparse.Namespace, pg_versions: list[str]) -> Iterator[Instance]:
    """Every instance the options ask for, database by database; each PostgreSQL cluster is
    removed once its instances are done. The clusters' versions are appended to
    ``pg_versions`` (for :func:`machine_record`)."""
    for database in args.database:
        with instances(
            database, args.sizes, args.data_dir, fresh=args.fresh, pg_durable=not args.pg_no_fsync
        ) as (made, version):
            if version:
                pg_versions.append(version)
            yield from made


def machine_record(pg_version: str | None, load_before: tuple[float, ...]) -> dict[str, Any]:
    """The machine the numbers came from, with its load before and after; printed too."""
    record = machine(pg_version) | {
        "load_average": load_before,
        "load_average_after": os.getloadavg(),
    }
    print(
        f"\nmachine: {record['cpu']}, {record['cores']} cores, Python {record['python']}; "
        f"load {record['load_average']} -> {record['load_average_after']}\n"
    )
    return record


def write_results(name: str, report: dict[str, Any]) -> Path:
    """bench/results/<name>-<UTC timestamp>.json (gitignored)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"written to {path.relative_to(ROOT)}")
    return path


def sign_in_directly(app: Any, client: Any, user_id: int) -> None:
    """Give a test client a staff session of ``user_id`` as a real sign-in leaves it (a row of
    ``staff_sessions`` and the cookie), skipping the password and code pages, which are not
    what these benchmarks measure."""
    from intake import staff_sessions
    from intake.extensions import db
    from intake.models import User

    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        token = staff_sessions.open_session(db.session(), user, user_agent="bench", address="")
        db.session.commit()
        version = user.session_version
        db.session.remove()
    now = int(time.time())
    with client.session_transaction("/coordinator/") as session:
        session.update(uid=user_id, sv=version, sid=token, nonce="bench", login_at=now, seen_at=now)
