"""Key services: where the keyring lives, what each key protects, rotation and retirement.

Services take the session, flush and never commit; the batch loop in the CLI commits one
batch at a time, which is what makes an interrupted rotation resume where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from intake import audit
from intake.models import SEALED_MODELS, SealedMixin
from intake.sealing import KeyNotFound, Keyring, SealedBlob

KEYRING_EXTENSION = "intake.keyring"


class KeyInUse(Exception):
    """The key still protects rows (or is the one sealing new rows) and cannot be retired."""


def current_keyring() -> Keyring:
    keyring: Keyring = current_app.extensions[KEYRING_EXTENSION]
    return keyring


def keys_dir() -> Path:
    return Path(current_app.config["KEYS_DIR"])


def passphrase() -> bytes | None:
    value = current_app.config.get("KEY_PASSPHRASE")
    return value.encode("utf-8") if value else None


def reload_keyring() -> Keyring:
    """Re-read the key folder (after generate/retire) into the running app."""
    keyring = Keyring.load(
        keys_dir(), with_private=current_keyring().can_open, passphrase=passphrase()
    )
    current_app.extensions[KEYRING_EXTENSION] = keyring
    return keyring


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
class BatchResult:
    rewrapped: int
    remaining: bool


def rewrap_batch(session: Session, keyring: Keyring, batch_size: int) -> BatchResult:
    """Move up to ``batch_size`` rows onto the newest key. Flushes; the caller commits."""
    target = keyring.sealing_key_id
    budget = batch_size
    for model in SEALED_MODELS:
        if budget == 0:
            break
        budget -= _rewrap_model(session, keyring, model, target, budget)
    rewrapped = batch_size - budget
    session.flush()
    return BatchResult(rewrapped, remaining=budget == 0)


def _rewrap_model(
    session: Session, keyring: Keyring, model: type[SealedMixin], target: str, limit: int
) -> int:
    rows = session.scalars(
        select(model)
        .where(model.key_id.is_not(None), model.key_id != target)
        .order_by(model.key_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        assert row.key_id and row.wrapped_key and row.sealed_payload  # guaranteed by the query
        blob = SealedBlob(row.key_id, row.wrapped_key, row.sealed_payload)
        moved = keyring.rewrap(blob, binding=row.seal_binding())
        row.key_id, row.wrapped_key = moved.key_id, moved.wrapped_key
    return len(rows)


def rotate(
    session: Session,
    keyring: Keyring,
    *,
    actor: str,
    batch_size: int = 500,
    commit: Callable[[], None],
    on_batch: Callable[[int], None] = lambda _count: None,
) -> int:
    """Rewrap every row onto the newest key, committing after each batch. Safe to re-run."""
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
    total = 0
    while True:
        result = rewrap_batch(session, keyring, batch_size)
        commit()
        total += result.rewrapped
        on_batch(result.rewrapped)
        if not result.remaining:
            break
    audit.record(
        session,
        actor=actor,
        action="keys.rotation_finished",
        target=target,
        details={"rewrapped_rows": total},
    )
    commit()
    return total


def retire(session: Session, keyring: Keyring, key_id: str, *, actor: str) -> None:
    """Check a key can go and audit its retirement in the caller's transaction.

    The caller commits, then destroys the files with :func:`sealing.retire_key_files`, so a
    failed commit never leaves a destroyed key without its audit row.
    """
    known = {info.key_id: info for info in keyring.list_keys()}
    if key_id not in known:
        raise KeyNotFound(f"no key {key_id!r}")
    if key_id == keyring.sealing_key_id:
        raise KeyInUse(f"{key_id} is the newest key and seals new records; generate another first")
    in_use = key_usage(session).get(key_id, 0)
    if in_use:
        raise KeyInUse(f"{key_id} still protects {in_use} rows; run `keys rotate` first")
    audit.record(session, actor=actor, action="keys.retired", target=key_id)
