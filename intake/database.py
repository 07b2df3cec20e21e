"""Engine settings per database.

SQLite (the embedded default) runs in WAL mode with a busy timeout, zeroes deleted content
(``secure_delete``) so shredded rows do not linger in free pages, and begins every transaction
with ``BEGIN IMMEDIATE``: WAL plus a timeout alone still fails read-then-write transactions under
concurrent workers (measured in ../shared/RECIPES.md). A request that only reads may opt out with
:func:`read_only`, which begins a deferred transaction so readers never wait for writers.
"""

from __future__ import annotations

import functools
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Full, Queue
from typing import Any, TypeVar, cast

from sqlalchemy import Engine, Insert, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

log = logging.getLogger("intake.database")

SQLITE_BUSY_TIMEOUT_MS = 15_000
READ_ONLY_OPTION = "intake_read_only"
# PostgreSQL serialization_failure and deadlock_detected: the server rolled the transaction
# back to break a conflict, and running it again from the start is the documented remedy.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})
RETRY_ATTEMPTS = 5
RETRY_BASE_DELAY = 0.05  # seconds; the n-th retry sleeps up to base * 2**n (full jitter)
_JITTER = random.SystemRandom()  # os.urandom: no shared state between threads to seed


def engine_options(database_url: str) -> dict[str, Any]:
    """Engine options; ``hide_parameters`` keeps bound values out of error messages and logs."""
    if database_url.startswith("sqlite"):
        return {
            "hide_parameters": True,
            "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        }
    return {"hide_parameters": True, "pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}


def configure_engine(engine: Engine) -> None:
    """Install per-connection settings; a no-op for databases other than SQLite."""
    if engine.dialect.name != "sqlite":
        return

    database = engine.url.database

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself
        cursor = dbapi_connection.cursor()
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            "PRAGMA foreign_keys=ON",
            "PRAGMA secure_delete=ON",
            "PRAGMA synchronous=NORMAL",
        ):
            cursor.execute(pragma)
        cursor.close()
        if database and database != ":memory:":
            _owner_only(Path(database))

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        deferred = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


def _owner_only(path: Path) -> None:
    """The database holds ciphertext and blind indexes: readable by its owner only."""
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if candidate.exists() and candidate.stat().st_mode & 0o077:
            candidate.chmod(0o600)


def read_only(session: Session) -> None:
    """Mark the session's next transaction as read-only (SQLite: a deferred BEGIN).

    Call before the first query of the transaction; writing afterwards is a bug and may fail
    with "database is locked" under load.
    """
    session.connection(execution_options={READ_ONLY_OPTION: True})


def insert_unless_taken(session: Session, table: Table, row: dict[str, Any]) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING <primary key>`` of ``row``; the key or None.

    None means a unique constraint or index already held one of the row's values. Unlike a
    failed INSERT, a skipped one leaves the transaction usable (no savepoint needed); other
    constraint failures still raise. Runs on the session's connection (Core, no ORM work),
    with a statement built once per dialect and table: only the values are bound per call.
    """
    connection = session.connection()
    statement = _insert_unless_taken(connection.dialect.name, table)
    return connection.execute(statement, row).scalar_one_or_none()


@functools.cache
def _insert_unless_taken(dialect: str, table: Table) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing().returning(*table.primary_key)


T = TypeVar("T")


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_DONE = object()


def read_ahead(batches: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``batches`` in a thread of its own, up to ``depth`` items ahead of the consumer.

    Database drivers wait for the server, and SQLite for its pages, without holding the GIL,
    so the next batch is fetched while the consumer works on this one (the export opens each
    batch's rows meanwhile). Whatever connection ``batches`` uses must be left alone until this
    generator ends; if the consumer stops early (a download cancelled), the thread is told to
    stop and joined before this generator returns, so the caller may then use the connection
    again (to roll back). An error in the thread is raised here, in the consumer.
    """
    queue: Queue[object] = Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.05)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not hand_over(item):
                    return
            hand_over(_DONE)
        except BaseException as error:  # handed to the consumer, which raises it
            hand_over(_Failed(error))
        finally:  # a generator stopped early cleans up here, before the consumer goes on
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="intake-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            yield cast(T, item)
    finally:
        stop.set()
        thread.join()


def checkpoint(session: Session, wait_ms: int = 1000) -> bool:
    """SQLite: move the write-ahead log into the database file and empty it.

    With ``secure_delete`` on, this is what finally overwrites a shredded record's old pages;
    until then the log still holds them. Run it after the commit, off the request path: it
    waits up to ``wait_ms`` for open transactions, and returns False (logged) if one is still
    open, in which case the next checkpoint finishes the job. Other databases: a no-op, True.
    """
    engine = session.get_bind()
    if not isinstance(engine, Engine) or engine.dialect.name != "sqlite":
        return True
    # A raw connection is in autocommit mode here: a checkpoint cannot run inside a transaction.
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
        busy = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()
    finally:
        raw.close()
    if busy:
        log.warning("WAL checkpoint deferred: a transaction was still open")
    return not busy


def is_transient(error: BaseException) -> bool:
    """Whether running the whole transaction again may succeed: a PostgreSQL serialization
    failure or deadlock (40001, 40P01), or SQLite busy or locked (its busy timeout ran out)."""
    if not isinstance(error, DBAPIError):
        return False
    original = error.orig
    if getattr(original, "sqlstate", None) in TRANSIENT_SQLSTATES:
        return True
    code = getattr(original, "sqlite_errorcode", None)
    return (
        isinstance(original, sqlite3.OperationalError)
        and code is not None
        and (code & 0xFF in {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
    )


def retry_transient(
    session: Session,
    transaction: Callable[[], T],
    *,
    attempts: int = RETRY_ATTEMPTS,
    base_delay: float = RETRY_BASE_DELAY,
) -> T:
    """Run ``transaction`` (which does its work and commits) until it is not refused as
    :func:`is_transient`, at most ``attempts`` times; its result.

    Before each retry the session is rolled back (so the work starts again from a fresh
    transaction: everything the failed attempt did, audit rows included, is gone) and sleeps a
    random time up to ``base_delay * 2**n``, so two transactions that met once do not meet
    again in step. The last failure, and any other error, is raised (after a rollback).
    """
    for attempt in range(attempts):
        try:
            return transaction()
        except DBAPIError as error:
            session.rollback()
            if not is_transient(error) or attempt == attempts - 1:
                raise
            log.info("transaction retried after %s", type(error.orig).__name__)
        time.sleep(_JITTER.uniform(0, base_delay * 2**attempt))
    raise AssertionError("unreachable")  # the loop returns or raises
