"""Fault tests against real gunicorn processes: nothing confirmed is lost, nothing is doubled.

Each test starts its own gunicorn (``--no-control-socket --pid FILE``) on a free port of
127.0.0.1 and stops it by its PID; the database-down test starts and stops a PostgreSQL
cluster of its own, never the session's. The HTTP visitor is the load driver's
(bench/load.py), so the suite and the benchmark play the same visitor.
"""

from __future__ import annotations

import html
import http.client
import importlib.util
import random
import re
import shutil
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bench.flood import flood, start_redis
from bench.load import (
    HIGH_LIMIT,
    Answer,
    Gunicorn,
    PgCluster,
    UnexpectedAnswer,
    Visitor,
    clean_environment,
    hidden_fields,
    marker,
    postgres_bin,
    valid_answers,
    visit,
)
from intake import create_app
from intake.audit import verify_chain
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import AuditEvent, Submission
from intake.submissions import _token_digest, open_submission
from tests.conftest import TEST_SECRET, Database, _test_config, migrate, require

NETWORK_ERRORS = (OSError, http.client.HTTPException)
ServerFactory = Callable[..., Gunicorn]


# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def serve(tmp_path: Path, keys_dir: Path) -> Iterator[ServerFactory]:
    """Start Intake under gunicorn on a database URL; every server is stopped afterwards."""
    started: list[Gunicorn] = []

    def start(url: str, workers: int = 2, extra_args: tuple[str, ...] = (), **env: str) -> Gunicorn:
        settings = {
            "INTAKE_ENV": "development",
            "INTAKE_INSTANCE_PATH": str(tmp_path / "instance"),
            "INTAKE_DATABASE_URL": url,
            "INTAKE_KEYS_DIR": str(keys_dir),
            "INTAKE_SECRET_KEY": TEST_SECRET,
            "INTAKE_SUBMIT_RATE_LIMIT": HIGH_LIMIT,
            "INTAKE_WITHDRAW_RATE_LIMIT": HIGH_LIMIT,
            **env,
        }
        server = Gunicorn(
            "intake.wsgi:app",
            clean_environment(**settings),
            tmp_path,
            workers=workers,
            name=f"gunicorn-{len(started)}",
            extra_args=extra_args,
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def _checked_app(url: str, tmp_path: Path, keys_dir: Path) -> Any:
    return create_app(_test_config(url, tmp_path / "instance-check", keys_dir))


def _dispose(app: Any) -> None:
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def _retrying(call: Callable[[], Answer], seconds: float = 20.0) -> Answer:
    """What a person does when the page will not load: press the button again."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except NETWORK_ERRORS:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def assert_nothing_lost(
    url: str, tmp_path: Path, keys_dir: Path, confirmed: dict[str, tuple[str, str]], posted: int
) -> None:
    """Every confirmed form is stored once under its reference and opens; no row is half-made."""
    app = _checked_app(url, tmp_path, keys_dir)
    try:
        with app.app_context():
            session = db.session()
            keyring = current_keyring()
            rows = session.scalars(select(Submission)).all()
            assert len(rows) <= posted  # nothing stored that nobody sent
            references = [row.reference for row in rows]
            assert len(set(references)) == len(references), "a reference was issued twice"
            tokens = [row.submit_token_hash for row in rows]
            assert None not in tokens and len(set(tokens)) == len(tokens), "a form stored twice"
            half = session.scalar(
                select(func.count())
                .select_from(Submission)
                .where(
                    (Submission.shredded_at.is_(None))
                    & (
                        Submission.sealed_payload.is_(None)
                        | Submission.wrapped_key.is_(None)
                        | Submission.key_id.is_(None)
                    )
                )
            )
            assert half == 0, "a row without its sealed payload"
            received = session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "submission.received")
            )
            assert received == len(rows), "a submission without its audit row, or the reverse"
            report = verify_chain(session)
            assert report.ok, str(report)

            by_token = {row.submit_token_hash: row for row in rows}
            for token, (reference, _mark) in confirmed.items():
                row = by_token.get(_token_digest(keyring, token))
                assert row is not None, f"confirmed {reference} is not in the database"
                assert row.reference == reference
            names = {mark: reference for reference, mark in confirmed.values()}
            for row in rows:
                opened = open_submission(session, keyring, row, actor="test")
                mark = opened["full_name"].removeprefix("Ana ")
                if mark in names:
                    assert names[mark] == row.reference
            session.rollback()
    finally:
        _dispose(app)


# ---------------------------------------------------------------------------- kill -9


def test_kill_9_under_load_loses_nothing(
    database: Database, serve: ServerFactory, tmp_path: Path, keys_dir: Path
) -> None:
    """SIGKILL the master and workers at random moments while forms are being sent."""
    server = serve(database.url, workers=2)
    port = server.port
    stop = threading.Event()
    lock = threading.Lock()
    confirmed: dict[str, tuple[str, str]] = {}
    unexpected: list[str] = []
    posted: list[str] = []

    def client() -> None:
        while not stop.is_set():
            visitor = Visitor(port, timeout=10)
            try:
                _page, hidden = visitor.open_form()
            except (*NETWORK_ERRORS, UnexpectedAnswer):
                time.sleep(0.05)
                continue
            mark = marker()
            fields = {**hidden, **valid_answers(mark)}
            with lock:
                posted.append(hidden["form_token"])
            sent = _retrying(lambda v=visitor, f=fields: v.post_form(f))  # type: ignore[misc]
            if sent.status != 303:
                unexpected.append(f"POST {sent.status}")
                continue
            page = _retrying(lambda v=visitor, s=sent: v.follow(s))  # type: ignore[misc]
            found = re.search(r'id="reference">([^<]+)<', page.body)
            if page.status != 200 or found is None:
                unexpected.append(f"confirmation {page.status}")
                continue
            with lock:
                confirmed[hidden["form_token"]] = (html.unescape(found.group(1)), mark)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    kills = 0
    try:
        for _ in range(3):
            time.sleep(random.uniform(0.3, 0.9))
            server.kill9()
            kills += 1
            server.start()
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert kills == 3
    assert not unexpected, unexpected
    assert len(confirmed) >= 5, "the driver barely got through; the test proved little"
    assert_nothing_lost(database.url, tmp_path, keys_dir, confirmed, len(set(posted)))


# ---------------------------------------------------------------------------- database down


@pytest.fixture
def own_postgres() -> Iterator[PgCluster]:
    """A cluster for this test alone: stopping it must not disturb the session's."""
    bin_dir = postgres_bin()
    require(bin_dir is not None, "PostgreSQL", "install it with `apt-get install postgresql`")
    assert bin_dir is not None
    cluster = PgCluster(bin_dir, durable=False).start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.postgres_only
def test_database_down_keeps_the_form_and_recovers_without_restart(
    own_postgres: PgCluster, serve: ServerFactory, tmp_path: Path, keys_dir: Path
) -> None:
    url = own_postgres.createdb("intake_down")
    migrate(url, tmp_path / "instance-migrate", keys_dir)
    server = serve(url, workers=2)
    port = server.port
    visit(Visitor(port))  # the pools hold live connections now

    visitor = Visitor(port)
    _page, hidden = visitor.open_form()
    mark = marker()
    answers = valid_answers(mark)
    own_postgres.stop()

    refused = visitor.post_form({**hidden, **answers})
    assert refused.status == 503
    assert "We could not save your answers just now" in refused.body
    kept = hidden_fields(refused.body)
    assert kept["form_token"] == hidden["form_token"]  # sending it again stores it once
    for name in ("full_name", "email", "postal_code", "signature"):
        assert f'value="{html.escape(answers[name])}"' in refused.body, name
    assert html.escape(answers["phone"]) in refused.body
    ready = visitor.request("GET", "/readyz")
    assert ready.status == 503
    assert '"not ready"' in ready.body and "unreachable" in ready.body

    own_postgres.start()  # same port, same data; gunicorn is not restarted
    resent = visitor.post_form({**kept, **answers})
    assert resent.status == 303, resent.status
    assert visitor.follow(resent).status == 200
    for _ in range(4):  # every worker, whichever answers, is ready again
        assert visitor.request("GET", "/readyz").status == 200
    assert visit(Visitor(port)).reference
    assert "could not store a submission: OperationalError" in server.log()
    assert "unhandled" not in server.log()


# ---------------------------------------------------------------------------- replays


def test_fifty_identical_replays_store_one_record(
    database: Database, serve: ServerFactory, tmp_path: Path, keys_dir: Path
) -> None:
    server = serve(database.url, workers=4)
    visitor = Visitor(server.port, timeout=60)
    _page, hidden = visitor.open_form()
    fields = {**hidden, **valid_answers(marker())}
    start = threading.Barrier(50)
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def replay() -> None:
        twin = Visitor(server.port, timeout=60)
        twin.cookies = dict(visitor.cookies)  # the same browser session
        start.wait()
        answer = twin.post_form(fields)
        with lock:
            answers.append((answer.status, answer.location))

    threads = [threading.Thread(target=replay) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert Counter(status for status, _ in answers) == {303: 50}
    assert len({location for _, location in answers}) == 1
    app = _checked_app(database.url, tmp_path, keys_dir)
    try:
        with app.app_context():
            assert db.session.scalar(select(func.count()).select_from(Submission)) == 1
    finally:
        _dispose(app)


# ---------------------------------------------------------------------------- SQLite locking


def test_sqlite_with_four_workers_never_shows_database_is_locked(
    sqlite_db: Database, serve: ServerFactory
) -> None:
    """Sends, withdrawals (with their WAL checkpoints) and readiness probes, all at once."""
    server = serve(sqlite_db.url, workers=4)
    port = server.port
    statuses: Counter[int] = Counter()
    bodies_locked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def note(answer: Answer) -> None:
        with lock:
            statuses[answer.status] += 1
            if "database is locked" in answer.body.lower():
                bodies_locked.append(answer.body[:200])

    def client(number: int) -> None:
        while not stop.is_set():
            visitor = Visitor(port, timeout=60)
            try:
                done = visit(visitor)
                note(visitor.request("GET", "/readyz"))
                if number % 2 and done.withdrawal_code:
                    page = visitor.request("GET", "/withdraw")
                    note(page)
                    fields = {
                        **hidden_fields(page.body),
                        "reference": done.reference,
                        "code": done.withdrawal_code,
                    }
                    answer = visitor.post_form(fields, "/withdraw")
                    note(answer)
                    if answer.status != 303:
                        failures.append(f"withdraw {answer.status}")
            except UnexpectedAnswer as error:
                note(error.answer)
                failures.append(f"{error.step} {error.answer.status}")

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    log = server.log()
    assert statuses[500] == 0 and statuses[503] == 0, statuses
    assert not bodies_locked
    assert "database is locked" not in log.lower()
    assert "OperationalError" not in log and "unhandled" not in log
    assert not failures, failures
    assert statuses[303] >= 10, statuses


# ---------------------------------------------------------------------------- oversized bodies


def _read_status(sock: socket.socket) -> str:
    received = b""
    while b"\r\n" not in received:
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received.split(b"\r\n", 1)[0].decode()


def test_oversized_body_gets_413_before_it_is_sent(
    sqlite_db: Database, serve: ServerFactory
) -> None:
    """Content-Length says 10 MB; 2 KB follow; the 413 arrives without waiting for the rest."""
    server = serve(sqlite_db.url, workers=1)
    announced = 10 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {announced}\r\n\r\n".encode()
            + b"full_name="
            + b"a" * 2048
        )
        status = _read_status(sock)  # a server buffering the body would wait here: timeout
    assert status.split(" ")[1] == "413", status


def test_chunked_body_over_the_limit_is_cut_off(sqlite_db: Database, serve: ServerFactory) -> None:
    """No length announced: the server stops reading past the limit instead of buffering 10 MB."""
    server = serve(sqlite_db.url, workers=1)
    chunk = b"a" * 16384
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.settimeout(0.2)
        status = ""
        while sent < 10 * 1024 * 1024:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break  # the server closed the connection: it will not take the rest
            sent += len(chunk)
            try:
                status = _read_status(sock)
                break
            except TimeoutError:
                continue
        sock.settimeout(10)
        if not status:
            status = _read_status(sock)
    assert status.split(" ")[1] == "413", status
    assert sent < 1024 * 1024, f"the client got to send {sent} bytes before being stopped"

    visitor = Visitor(server.port)  # a chunked form under the limit is still taken whole
    _page, hidden = visitor.open_form()
    body = urllib.parse.urlencode({**hidden, **valid_answers(marker())}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    cookie = "; ".join(f"{k}={v}" for k, v in visitor.cookies.items())
    connection.request(
        "POST",
        "/",
        body=iter([body[:100], body[100:]]),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
        encode_chunked=True,
    )
    assert connection.getresponse().status == 303
    connection.close()


# ---------------------------------------------------------------------------- flood from one IP


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server on a free port, stopped by its PID."""
    require(
        shutil.which("redis-server") is not None and importlib.util.find_spec("redis") is not None,
        "redis-server and the redis Python package",
        "install them with `apt-get install redis-server` and `pip install -e '.[test]'`",
    )
    process, url = start_redis(tmp_path)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_flood_from_one_address_is_limited_across_workers(
    sqlite_db: Database, serve: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    access_log = tmp_path / "access.log"
    server = serve(
        sqlite_db.url,
        workers=4,
        extra_args=("--access-logfile", str(access_log), "--access-logformat", "%(p)s %(m)s %(s)s"),
        INTAKE_RATELIMIT_STORAGE_URI=redis_url,
        INTAKE_SUBMIT_RATE_LIMIT="10 per minute",
        INTAKE_TRUSTED_PROXIES="1",  # the test stands for a proxy naming each client
    )
    statuses = flood(server.port, "203.0.113.7", visits=40)
    assert statuses == {303: 10, 429: 30}, statuses
    assert flood(server.port, "198.51.100.9", visits=3, clients=1) == {303: 3}
    served_by = {
        line.split()[0] for line in access_log.read_text().splitlines() if " POST " in line
    }
    assert len(served_by) >= 2, "every POST hit one worker: the test proved nothing shared"
    import redis

    with redis.Redis.from_url(redis_url) as client:
        assert client.keys("*submit*"), "the limiter did not count in redis"
