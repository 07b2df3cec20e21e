"""Key services: where the keyring lives, what each key protects, rotation and retirement.

Services take the session, flush and never commit; the batch loop in the CLI commits one
batch at a time, which is what makes an interrupted rotation resume where it stopped.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flask import current_app
from sqlalchemy import Row, bindparam, func, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from intake import audit
from intake.models import SEALED_MODELS, SealedMixin, SealingKey, utcnow
from intake.sealing import KeyNotFound, Keyring, KeyringError, SealedBlob, SealingError

KEYRING_EXTENSION = "intake.keyring"
# Rows per committed batch. Each commit (SQLite: and its WAL checkpoint) costs a fixed part, so
# bigger batches rotate faster: measured on 100,000 rows (SQLite), 500 spent ~23% of the time
# committing, 2,000 ~14%, 5,000 ~11%. A batch holds its rows' locks (SQLite: the write lock)
# while it runs, about half a second at 2,000 rows; past that the gain is small, the waits grow.
DEFAULT_BATCH_SIZE = 2000
log = logging.getLogger("intake.keys")


class KeyInUse(Exception):
    """The key still protects rows (or is the one sealing new rows) and cannot be retired."""


class KeyRetired(SealingError):
    """This host's newest key was retired: it must get the new public key before sealing again."""


_CLAIM = (
    select(SealingKey.__table__.c.retired_at)
    .where(SealingKey.__table__.c.key_id == bindparam("key_id"))
    .with_for_update(read=True)
)


def claim_for_sealing(session: Session, key_id: str) -> None:
    """Check, under a shared lock held to commit, that ``key_id`` may still seal.

    ``retire`` takes the same row exclusively, so a retirement and a seal to that key can
    never both commit: either the seal lands first and the retirement sees its row, or the
    retirement lands first and the seal is refused.
    """
    # Core on the session's connection: every form sent runs this, and it needs one column.
    found = session.connection().execute(_CLAIM, {"key_id": key_id}).one_or_none()
    if found is not None:
        retired_at = found.retired_at
    else:  # the key's first use here: register it (rare), then lock it as usual
        retired_at = _lock_key_row(session, key_id, exclusive=False).retired_at
    if retired_at is not None:
        raise KeyRetired(f"{key_id} is retired; this host needs the newest public key")


def is_retired(session: Session, key_id: str) -> bool:
    """Whether ``key_id`` was retired in the database (a lock-free read, for health checks)."""
    query = select(SealingKey.retired_at).where(SealingKey.key_id == key_id)
    return session.scalar(query) is not None


def _lock_key_row(session: Session, key_id: str, *, exclusive: bool) -> SealingKey:
    query = (
        select(SealingKey).where(SealingKey.key_id == key_id).with_for_update(read=not exclusive)
    )
    row = session.scalars(query).one_or_none()
    if row is None:
        try:
            with session.begin_nested():
                session.add(SealingKey(key_id=key_id))
        except IntegrityError:
            pass  # another transaction registered it first
        row = session.scalars(query.execution_options(populate_existing=True)).one()
    return row


class KeyProvider(Protocol):
    """Where the app gets its keyring. The folder is the one provider today; a KMS or Vault
    provider would implement the same three members and be chosen in ``create_app``."""

    passphrase: bytes | None

    def get(self) -> Keyring: ...

    def reload(self) -> Keyring: ...


class FolderKeyProvider:
    """The app's keyring, re-read whenever the key folder changes.

    Every worker sees a new key as soon as it lands in the folder (``keys generate``, a copied
    public key on a patient server), without a restart, so no worker goes on sealing to a key
    that is about to be retired. A folder that fails to load (say, half copied) leaves the last
    good keyring in place. The passphrase lives here, not in ``app.config``.
    """

    def __init__(self, directory: Path, *, with_private: bool, passphrase: bytes | None) -> None:
        self.directory = directory
        self.with_private = with_private
        self.passphrase = passphrase
        self._lock = threading.Lock()
        self._stamp = self._folder_stamp()
        self._keyring = self._load()

    def _folder_stamp(self) -> tuple[tuple[str, int, int], ...]:
        """Names, sizes and times of the folder's files: a few stat calls, no reads.

        Not the folder's own mtime alone: its clock ticks too coarsely to see two quick changes.
        """
        try:
            with os.scandir(self.directory) as entries:
                return tuple(
                    sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries)
                )
        except FileNotFoundError:
            return ()

    def _load(self) -> Keyring:
        return Keyring.load(
            self.directory, with_private=self.with_private, passphrase=self.passphrase
        )

    def get(self) -> Keyring:
        stamp = self._folder_stamp()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp  # a folder that fails is retried once it changes again
                    try:
                        self._keyring = self._load()
                    except SealingError as error:
                        log.warning(
                            "key folder changed but did not load (%s); keeping the last keyring",
                            type(error).__name__,
                        )
        return self._keyring

    def reload(self) -> Keyring:
        with self._lock:
            self._stamp = self._folder_stamp()
            self._keyring = self._load()
        return self._keyring


def _provider() -> KeyProvider:
    provider: KeyProvider = current_app.extensions[KEYRING_EXTENSION]
    return provider


def current_keyring() -> Keyring:
    return _provider().get()


def keys_dir() -> Path:
    """The key folder, for the commands that manage one (generate, retire, export)."""
    provider = _provider()
    if not isinstance(provider, FolderKeyProvider):
        raise KeyringError("this deployment's keys are not kept in a folder")
    return provider.directory


def passphrase() -> bytes | None:
    return _provider().passphrase


def reload_keyring() -> Keyring:
    """Re-read the keys now (the CLI, right after it changed them)."""
    return _provider().reload()


def key_usage(session: Session) -> dict[str, int]:
    """How many sealed rows each key id protects, across every sealed table."""
    usage: dict[str, int] = {}
    for model in SEALED_MODELS:
        rows = session.execute(
            select(model.key_id, func.count())
            .where(model.key_id.is_not(None))
            .group_by(model.key_id)
        ).all()
        for key_id, count in rows:
            if key_id is not None:
                usage[key_id] = usage.get(key_id, 0) + count
    return usage


def pending_rotation(session: Session, keyring: Keyring) -> int:
    """Rows still sealed to a key other than the newest."""
    target = keyring.sealing_key_id
    return sum(count for key_id, count in key_usage(session).items() if key_id != target)


@dataclass(frozen=True)
class FailedRow:
    id: uuid.UUID
    binding: str


@dataclass(frozen=True)
class BatchResult:
    rewrapped: int
    failed: list[FailedRow]  # rows whose sealed data did not open
    remaining: bool
    cursor: dict[str, uuid.UUID]  # per table, the last id this batch looked at


@dataclass(frozen=True)
class RotationResult:
    rewrapped: int
    failed: list[FailedRow]


def rewrap_batch(
    session: Session,
    keyring: Keyring,
    batch_size: int,
    *,
    after: Mapping[str, uuid.UUID] | None = None,
) -> BatchResult:
    """Move up to ``batch_size`` rows onto the newest key. Writes; the caller commits.

    A row whose data key does not open (damaged, tampered) stays where it is and is reported,
    so one bad row cannot stop the rotation of every row behind it. Pass the previous batch's
    ``cursor`` as ``after``: each batch then starts where the last one stopped, past the rows
    already moved and those reported, instead of walking the table from its start (which made
    a rotation quadratic in the number of rows).

    Only the key columns are read and written: the payload is never loaded, and each table's
    rows are moved by one guarded UPDATE statement run for the whole batch (executemany).
    """
    target = keyring.sealing_key_id
    claim_for_sealing(session, target)
    cursor = dict(after or {})
    budget, rewrapped, failed = batch_size, 0, list[FailedRow]()
    for model in SEALED_MODELS:
        if budget == 0:
            break
        rows = _rows_to_move(session, model, target, budget, cursor.get(model.__tablename__))
        budget -= len(rows)
        if rows:
            cursor[model.__tablename__] = rows[-1].id
        moves = []
        for row in rows:
            binding = model.binding_for(row)
            moved = _rewrap(keyring, row, binding)
            if moved is None:
                failed.append(FailedRow(row.id, binding))
            else:
                moves.append(
                    {
                        "b_id": row.id,
                        "b_old_key_id": row.key_id,
                        "b_old_wrapped_key": row.wrapped_key,
                        "b_key_id": moved.key_id,
                        "b_wrapped_key": moved.wrapped_key,
                    }
                )
        if moves:
            rewrapped += _move(session, model, moves)
    return BatchResult(rewrapped, failed, remaining=budget == 0, cursor=cursor)


def _rows_to_move(
    session: Session,
    model: type[SealedMixin],
    target: str,
    limit: int,
    after: uuid.UUID | None,
) -> list[Row[Any]]:
    columns = dict.fromkeys((*model.binding_columns(), model.id, model.key_id, model.wrapped_key))
    query = select(*columns).where(model.key_id.is_not(None), model.key_id != target)
    if after is not None:
        query = query.where(model.id > after)
    # Wait for a row someone is editing; skipping it would leave it behind. (SQLite: the
    # batch's write transaction, BEGIN IMMEDIATE, already keeps every other writer out.)
    return list(session.execute(query.order_by(model.id).limit(limit).with_for_update()))


def _rewrap(keyring: Keyring, row: Row[Any], binding: str) -> SealedBlob | None:
    if row.wrapped_key is None:
        return None  # nothing to unwrap: reported, like a row that does not open
    # rewrap reads the key id and wrapped key only; the payload stays in the database.
    blob = SealedBlob(row.key_id, row.wrapped_key, b"")
    try:
        return keyring.rewrap(blob, binding=binding)
    except SealingError:
        return None


def _move(session: Session, model: type[SealedMixin], moves: list[dict[str, Any]]) -> int:
    """UPDATE each row to its new key, unless it changed since it was read. Returns rows moved.

    The WHERE clause holds the key id and wrapped key read above, so a concurrent change (a
    shred, a re-seal) is never overwritten. The version counter, where the model has one, is
    bumped as an ORM flush would, so an editor holding the row from before sees it changed.
    """
    mapper = inspect(model)
    table = mapper.local_table
    values: dict[str, Any] = {
        "key_id": bindparam("b_key_id"),
        "wrapped_key": bindparam("b_wrapped_key"),
    }
    version = mapper.version_id_col
    if version is not None:
        values[version.key] = table.c[version.key] + 1
    statement = (
        update(table)
        .where(
            table.c.id == bindparam("b_id"),
            table.c.key_id == bindparam("b_old_key_id"),
            table.c.wrapped_key == bindparam("b_old_wrapped_key"),
        )
        .values(values)
    )
    result = session.connection().execute(statement, moves)
    return int(result.rowcount)


def rotate(
    session: Session,
    keyring: Keyring,
    *,
    actor: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    commit: Callable[[], None],
    on_batch: Callable[[int], None] = lambda _count: None,
) -> RotationResult:
    """Rewrap every row onto the newest key, committing after each batch. Safe to re-run.

    Rows that do not open are audited one by one (``keys.rewrap_failed``) and left on their
    key; the old key cannot be retired while they exist, which is the safe outcome.
    """
    target = keyring.sealing_key_id
    pending = pending_rotation(session, keyring)
    audit.record(
        session,
        actor=actor,
        action="keys.rotation_started",
        target=target,
        details={"pending_rows": pending},
    )
    commit()
    total, failed, cursor = 0, list[FailedRow](), dict[str, uuid.UUID]()
    while True:
        result = rewrap_batch(session, keyring, batch_size, after=cursor)
        cursor = result.cursor
        commit()  # the moves, and the batch's row locks, end before the audit head is taken
        if result.failed:
            # Its own transaction: the head after the submission rows would break the lock
            # order (intake.audit) and could deadlock with a withdrawal.
            for row in result.failed:
                audit.record(session, actor=actor, action="keys.rewrap_failed", target=row.binding)
            commit()
        total += result.rewrapped
        failed.extend(result.failed)
        on_batch(result.rewrapped + len(result.failed))
        if not result.remaining:
            break
    audit.record(
        session,
        actor=actor,
        action="keys.rotation_finished",
        target=target,
        details={
            "rewrapped_rows": total,
            "failed_rows": len(failed),
            "remaining_rows": pending_rotation(session, keyring),
        },
    )
    commit()
    return RotationResult(total, failed)


def retire(session: Session, keyring: Keyring, key_id: str, *, actor: str) -> None:
    """Check a key can go and audit its retirement in the caller's transaction.

    The caller commits, then destroys the files with :func:`sealing.retire_key_files`, so a
    failed commit never leaves a destroyed key without its audit row.
    """
    known = {info.key_id: info for info in keyring.list_keys()}
    if key_id not in known:
        raise KeyNotFound(f"no key {key_id!r}")
    if not known[key_id].active:
        raise KeyNotFound(f"{key_id} is already retired")
    if key_id == keyring.sealing_key_id:
        raise KeyInUse(f"{key_id} is the newest key and seals new records; generate another first")
    # Retire in the database first: this waits for every seal to that key still in flight,
    # and refuses every later one. Only then is the count of rows needing it final.
    _lock_key_row(session, key_id, exclusive=True).retired_at = utcnow()
    session.flush()
    in_use = key_usage(session).get(key_id, 0)
    if in_use:
        raise KeyInUse(f"{key_id} still protects {in_use} rows; run `keys rotate` first")
    audit.record(session, actor=actor, action="keys.retired", target=key_id)
