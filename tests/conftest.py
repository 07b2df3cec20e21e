"""Fixtures: apps on the migrated schema of SQLite and PostgreSQL, real keys, live server, browser.

Outside CI a missing Chromium or PostgreSQL skips those tests with one line saying how to get
them; with ``CI=true`` the same condition fails the run, because in CI nothing may skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from bench.load import postgres_bin, run_as_postgres
from intake import create_app
from intake.extensions import db
from intake.sealing import generate_key
from tests.factories import StaffAccount, login, make_user

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"
TABLES = (
    "notes",
    "submissions",
    "sealing_keys",
    "audit_events",
    "audit_head",
    "staff_sessions",
    "disclosures",
    "users",
    "login_throttles",
)


def require(available: bool, what: str, how: str) -> None:
    """Skip with one clear line outside CI; fail in CI (where nothing may skip)."""
    if available:
        return
    message = f"{what} is not available here; {how}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: nothing may skip)", pytrace=False)
    pytest.skip(message)  # outside CI only; in CI the line above fails instead


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per reason for skipping, however many tests it skipped."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    for reason, count in reasons.items():
        terminalreporter.write_line(f"SKIPPED {count} tests: {reason}", yellow=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    url: str
    bin_dir: Path | None
    host: str
    port: int
    user: str
    dbname: str

    def pg_dump(self) -> bytes:
        pg_dump = str(self.bin_dir / "pg_dump") if self.bin_dir else "pg_dump"
        result = subprocess.run(
            [
                pg_dump,
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "--no-owner",
                self.dbname,
            ],
            check=True,
            capture_output=True,
        )
        return result.stdout


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway cluster started for this test session (or INTAKE_TEST_POSTGRES_URL)."""
    external = os.environ.get("INTAKE_TEST_POSTGRES_URL")
    if external:
        yield _external_postgres(external)
        return
    bin_dir = postgres_bin()
    require(bin_dir is not None, "PostgreSQL", "install it with `apt-get install postgresql`")
    assert bin_dir is not None
    base = Path(tempfile.mkdtemp(prefix="intake-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port, data = free_port(), base / "data"
    options = (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
    try:
        _run(
            run_as_postgres(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                    "--no-locale",
                    "-E",
                    "UTF8",
                ]
            )
        )
        _run(
            run_as_postgres(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(base / "log"),
                    "-w",
                    "-o",
                    options,
                    "start",
                ]
            )
        )
        _run(
            [
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "intake_test",
            ]
        )
        yield PostgresServer(
            url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/intake_test",
            bin_dir=bin_dir,
            host="127.0.0.1",
            port=port,
            user="postgres",
            dbname="intake_test",
        )
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                run_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                check=False,
                capture_output=True,
            )
        shutil.rmtree(base, ignore_errors=True)


def _run(command: list[str]) -> None:
    """Run a setup command; on failure, show what it said (the cluster's own words)."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{Path(command[-1]).name}: {' '.join(command)}\n{result.stderr}")


def _external_postgres(url: str) -> PostgresServer:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return PostgresServer(
        url,
        None,
        parsed.host or "127.0.0.1",
        parsed.port or 5432,
        parsed.username or "postgres",
        parsed.database or "intake_test",
    )


# ---------------------------------------------------------------------------- schema and keys


def migrate(url: str, instance: Path, keys: Path) -> None:
    """Build the schema with the real migrations, exactly as `flask db upgrade` does."""
    import flask_migrate

    app = create_app(_test_config(url, instance, keys))
    with app.app_context():
        flask_migrate.upgrade()
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def keyring_template(session_dir: Path) -> Path:
    keys = session_dir / "keys"
    generate_key(keys)
    return keys


@pytest.fixture(scope="session")
def sqlite_template(session_dir: Path, keyring_template: Path) -> Path:
    path = session_dir / "template.sqlite3"
    migrate(f"sqlite:///{path}", session_dir / "instance", keyring_template)
    return path


@pytest.fixture(scope="session")
def postgres_migrated(
    postgres: PostgresServer, session_dir: Path, keyring_template: Path
) -> PostgresServer:
    migrate(postgres.url, session_dir / "instance-pg", keyring_template)
    return postgres


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        # Replica mode skips triggers, including the one that forbids truncating the audit trail.
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)}"))
        connection.execute(
            text("INSERT INTO audit_head (id, last_event_id, last_hash) VALUES (1, 0, :h)"),
            {"h": "0" * 64},
        )
    engine.dispose()


@dataclass
class Database:
    kind: str
    url: str
    sqlite_path: Path | None = None
    server: PostgresServer | None = None

    def raw_bytes(self) -> bytes:
        """Everything the database holds at rest: SQLite files, or a pg_dump."""
        if self.sqlite_path is not None:
            files = [
                self.sqlite_path,
                *(self.sqlite_path.with_name(self.sqlite_path.name + s) for s in ("-wal", "-shm")),
            ]
            return b"".join(path.read_bytes() for path in files if path.exists())
        assert self.server is not None
        return self.server.pg_dump()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """A fresh migrated database, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return sqlite_database(request, tmp_path)
    return postgres_database(request)


def postgres_database(request: pytest.FixtureRequest) -> Database:
    server: PostgresServer = request.getfixturevalue("postgres_migrated")
    _reset_postgres(server.url)
    return Database("postgresql", server.url, server=server)


@pytest.fixture
def pg_app(request: pytest.FixtureRequest, tmp_path: Path, keys_dir: Path) -> Iterator[Flask]:
    """An app on PostgreSQL only, for row-level locking that SQLite does not have."""
    factory = AppFactory(postgres_database(request), tmp_path, keys_dir)
    yield factory()
    factory.close()


def sqlite_database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    template: Path = request.getfixturevalue("sqlite_template")
    path = tmp_path / "intake.sqlite3"
    shutil.copyfile(template, path)
    return Database("sqlite", f"sqlite:///{path}", sqlite_path=path)


@pytest.fixture
def sqlite_db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    return sqlite_database(request, tmp_path)


@pytest.fixture
def keys_dir(tmp_path: Path, keyring_template: Path) -> Path:
    target = tmp_path / "keys"
    shutil.copytree(keyring_template, target)
    return target


# ---------------------------------------------------------------------------- apps


def _test_config(url: str, instance: Path, keys: Path, **extra: Any) -> dict[str, Any]:
    return {
        "TESTING": True,
        "INSTANCE_PATH": str(instance),
        "DATABASE_URL": url,
        "KEYS_DIR": str(keys),
        "SECRET_KEY": TEST_SECRET,
        # Tests send many forms from one address; rate-limit tests set their own limits.
        "SUBMIT_RATE_LIMIT": "100000 per minute",
        "WITHDRAW_RATE_LIMIT": "100000 per minute",
        **extra,
    }


class AppFactory:
    """Builds apps on one test database and disposes their engines afterwards."""

    def __init__(self, database: Database, tmp_path: Path, keys: Path) -> None:
        self.database = database
        self.tmp_path = tmp_path
        self.keys = keys
        self.apps: list[Flask] = []

    def __call__(self, **extra: Any) -> Flask:
        config = _test_config(self.database.url, self.tmp_path / "instance", self.keys, **extra)
        app = create_app(config)
        self.apps.append(app)
        return app

    def close(self) -> None:
        for app in self.apps:
            with app.app_context():
                db.session.remove()
                for engine in db.engines.values():
                    engine.dispose()


@pytest.fixture
def make_app(database: Database, tmp_path: Path, keys_dir: Path) -> Iterator[AppFactory]:
    factory = AppFactory(database, tmp_path, keys_dir)
    yield factory
    factory.close()


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


# ---------------------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def chromium_path() -> str:
    require(Path(CHROMIUM).exists(), "Chromium", "install it with `apt-get install chromium`")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser_type_launch_args(
    browser_type_launch_args: dict[str, Any], chromium_path: str
) -> dict[str, Any]:
    return {
        **browser_type_launch_args,
        "executable_path": chromium_path,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture
def make_sqlite_app(sqlite_db: Database, tmp_path: Path, keys_dir: Path) -> Iterator[AppFactory]:
    """Apps on SQLite only: for its own behaviour (files, WAL, locks) and the live server."""
    factory = AppFactory(sqlite_db, tmp_path, keys_dir)
    yield factory
    factory.close()


@pytest.fixture
def sqlite_app(make_sqlite_app: AppFactory) -> Flask:
    return make_sqlite_app()


@pytest.fixture
def live_app(make_sqlite_app: AppFactory) -> Flask:
    return make_sqlite_app(TESTING=False)


@pytest.fixture
def live_server(live_app: Flask, chromium_path: str) -> Iterator[str]:
    """The app served over real HTTP on 127.0.0.1, on a free port, in a thread."""
    server = make_server("127.0.0.1", 0, live_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


# ---------------------------------------------------------------------------- staff


@pytest.fixture
def admin(app: Flask) -> StaffAccount:
    return make_user(app, role="admin")


@pytest.fixture
def admin_client(app: Flask, admin: StaffAccount) -> FlaskClient:
    """A test client signed in as an admin, through the real password and code pages."""
    client = app.test_client()
    login(client, admin)
    return client
