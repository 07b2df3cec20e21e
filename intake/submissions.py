"""Submission services: store sealed, open (audited first), crypto-shred.

Services take the session, flush and never commit (one commit per request, in the view or CLI),
and write their audit rows in the same transaction as the change.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from intake import audit
from intake.keys import claim_for_sealing
from intake.models import Submission, utcnow, uuid7
from intake.sealing import Keyring, SealedBlob, SealingError

# Crockford-style alphabet without 0/O, 1/I/L and U: easy to read aloud and type on a phone.
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_LENGTH = 8
REFERENCE_ATTEMPTS = 5


class SubmissionGone(Exception):
    """The submission was crypto-shredded (withdrawn, expired or purged); nothing can be opened."""


@dataclass(frozen=True)
class TriageFacts:
    """The non-identifying facts stored in plaintext so coordinators can filter."""

    cancer_type: str
    age_band: str
    consent_version: str
    consent_language: str
    authorization_expires_at: datetime
    source: str | None = None


def new_reference() -> str:
    code = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))
    return f"{code[:4]}-{code[4:]}"


def store_submission(
    session: Session,
    keyring: Keyring,
    facts: TriageFacts,
    sealed_fields: Mapping[str, Any],
    *,
    email: str | None = None,
    birthday: date | None = None,
) -> Submission:
    """Seal ``sealed_fields`` and add the row; audited as received."""
    submission = Submission(
        id=uuid7(),
        received_at=utcnow(),
        status="new",
        cancer_type=facts.cancer_type,
        age_band=facts.age_band,
        source=facts.source,
        consent_version=facts.consent_version,
        consent_language=facts.consent_language,
        authorization_expires_at=facts.authorization_expires_at,
    )
    plaintext = json.dumps(dict(sealed_fields), ensure_ascii=False, sort_keys=True, default=str)
    blob = keyring.seal(plaintext.encode("utf-8"), binding=submission.seal_binding())
    claim_for_sealing(session, blob.key_id)  # refuses a key retired since this host loaded it
    submission.key_id = blob.key_id
    submission.wrapped_key = blob.wrapped_key
    submission.sealed_payload = blob.ciphertext
    if email:
        submission.email_index = keyring.email_index(email)
        if birthday:
            submission.email_birthday_index = keyring.email_birthday_index(email, birthday)
    _add_with_unique_reference(session, submission)
    audit.record(
        session,
        actor="patient",
        action="submission.received",
        target=submission.reference,
        details={"cancer_type": facts.cancer_type, "key_id": blob.key_id},
    )
    return submission


def _add_with_unique_reference(session: Session, submission: Submission) -> None:
    for _attempt in range(REFERENCE_ATTEMPTS):
        submission.reference = new_reference()
        try:
            with session.begin_nested():
                session.add(submission)
                session.flush()
            return
        except IntegrityError as error:
            if "reference" not in str(error.orig):
                raise  # another constraint failed: a bug to surface, not a collision to retry
    raise RuntimeError("could not draw an unused reference code")  # 30^8 codes: never in practice


def open_submission(
    session: Session, keyring: Keyring, submission: Submission, *, actor: str
) -> dict[str, Any]:
    """Open a submission and audit the reveal. The caller commits before sending anything.

    A blob that will not open is audited too (``submission.open_failed``) and the error is
    raised: the caller commits that row as well, because a failed open may be tampering.
    """
    if (
        submission.sealed_payload is None
        or submission.wrapped_key is None
        or submission.key_id is None
    ):
        raise SubmissionGone(submission.reference)
    audit.lock_head(session)
    blob = SealedBlob(submission.key_id, submission.wrapped_key, submission.sealed_payload)
    try:
        opened: dict[str, Any] = json.loads(keyring.open(blob, binding=submission.seal_binding()))
    except SealingError as error:
        audit.record(
            session,
            actor=actor,
            action="submission.open_failed",
            target=submission.reference,
            details={"error": type(error).__name__, "key_id": submission.key_id},
        )
        raise
    audit.record(session, actor=actor, action="submission.opened", target=submission.reference)
    return opened


def shred_submission(session: Session, submission: Submission, *, actor: str, reason: str) -> None:
    """Crypto-shred: drop the sealed data and its blind indexes, keep a tombstone. Idempotent.

    The row is re-read under a lock first, so a rotation or another withdrawal that changed it
    since it was loaded is seen, not overwritten (nor reported as a conflict to the patient).
    On SQLite, call :func:`intake.database.checkpoint` after committing, so the old pages also
    leave the write-ahead log.
    """
    audit.lock_head(session)
    session.refresh(submission, with_for_update=True)
    if submission.shredded_at is not None:
        return
    submission.key_id = None
    submission.wrapped_key = None
    submission.sealed_payload = None
    submission.email_index = None
    submission.email_birthday_index = None
    submission.shredded_at = utcnow()
    submission.status = "withdrawn"
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="submission.shredded",
        target=submission.reference,
        details={"reason": reason},
    )
