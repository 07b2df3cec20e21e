"""Submission services: store sealed, open (audited first), crypto-shred.

Services take the session, flush and never commit (one commit per request, in the view or CLI),
and write their audit rows in the same transaction as the change.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, delete, select
from sqlalchemy.orm import Session

from intake import audit
from intake.database import insert_unless_taken
from intake.keys import claim_for_sealing
from intake.models import SEALED_CHILDREN, Submission, utcnow, uuid7
from intake.sealing import Keyring, SealedBlob, SealingError

# Crockford-style alphabet without 0/O, 1/I/L and U: easy to read aloud and type on a phone.
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_LENGTH = 8
REFERENCE_ATTEMPTS = 5


AGE_BANDS = ((0, "0-17"), (18, "18-39"), (40, "40-64"), (65, "65-79"), (80, "80+"))
WITHDRAWAL_CODE_LENGTH = 12
SUBMISSIONS = cast(Table, Submission.__table__)


class WithdrawalRefused(Exception):
    """Reference and withdrawal code do not match a submission (deliberately not saying which)."""


class StorageConflict(Exception):
    """A new row met a unique value other than its reference or form token: a bug, never retried."""


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
    consent_text_sha256: str | None = None
    signer_role: str | None = None
    signed_at: datetime | None = None


@dataclass(frozen=True)
class Receipt:
    """What the person who sent the form is told: never stored in plaintext anywhere."""

    reference: str
    withdrawal_code: str | None
    replayed: bool = False
    withdrawn: bool = False  # a replay of a form whose submission was withdrawn since


def age_in_years(birthday: date, on: date) -> int:
    before_birthday = (on.month, on.day) < (birthday.month, birthday.day)
    return on.year - birthday.year - before_birthday


def age_band(birthday: date, on: date) -> str:
    """The coarse, non-identifying band coordinators filter by."""
    age = age_in_years(birthday, on)
    return next(band for lowest, band in reversed(AGE_BANDS) if age >= lowest)


def _grouped_code(length: int) -> str:
    code = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(length))
    return "-".join(code[start : start + 4] for start in range(0, length, 4))


def new_reference() -> str:
    return _grouped_code(REFERENCE_LENGTH)


def new_withdrawal_code() -> str:
    """About 59 bits, shown once; only its keyed digest is stored."""
    return _grouped_code(WITHDRAWAL_CODE_LENGTH)


def _withdrawal_code_for(keyring: Keyring, submit_token: str) -> str:
    """The withdrawal code of the form rendered with ``submit_token``, derived rather than drawn.

    A replay of the same form (a double click whose first answer the browser never showed,
    two tabs, a lost connection) must show the same confirmation, code included, yet only
    the code's digest is stored. Deriving it from the token under the blind-index key lets a
    replay show it again; the token lives only in the person's own page, like the code.
    """
    return _derived_code(keyring, "withdrawal-code", submit_token, WITHDRAWAL_CODE_LENGTH)


def _derived_code(keyring: Keyring, kind: str, submit_token: str, length: int) -> str:
    number = int.from_bytes(keyring.blind_index(kind, submit_token), "big")
    chars = []
    for _ in range(length):  # 256 bits reduced to at most about 59: no visible bias
        number, index = divmod(number, len(REFERENCE_ALPHABET))
        chars.append(REFERENCE_ALPHABET[index])
    code = "".join(chars)
    return "-".join(code[start : start + 4] for start in range(0, length, 4))


def pretend_receipt(keyring: Keyring, submit_token: str) -> Receipt:
    """What a bot caught by the honeypot is shown: stable per form, like a real receipt."""
    return Receipt(
        _derived_code(keyring, "honeypot-reference", submit_token, REFERENCE_LENGTH),
        _withdrawal_code_for(keyring, submit_token),
    )


def normalize_code(typed: str) -> str:
    """Read a code the way people type it: any case, spaces or dashes anywhere."""
    compact = "".join(char for char in typed.upper() if char.isalnum())
    return "-".join(compact[start : start + 4] for start in range(0, len(compact), 4))


def _withdrawal_digest(keyring: Keyring, reference: str, code: str) -> bytes:
    return keyring.blind_index("withdrawal", f"{reference}|{code}")


def _token_digest(keyring: Keyring, submit_token: str) -> bytes:
    return keyring.blind_index("submit-token", submit_token)


def receive_submission(
    session: Session,
    keyring: Keyring,
    facts: TriageFacts,
    sealed_fields: Mapping[str, Any],
    *,
    submit_token: str,
    email: str | None = None,
    birthday: date | None = None,
) -> Receipt:
    """Store a form sent by a patient, once: a replay of the same rendered form finds the first.

    ``submit_token`` is the random value of the form's hidden field. Two sends of it racing
    each other meet at the unique index; the loser finds and returns the winner's reference.
    Every send of one form gets the same withdrawal code (see :func:`_withdrawal_code_for`).
    """
    token_digest = _token_digest(keyring, submit_token)
    code = _withdrawal_code_for(keyring, submit_token)
    row = sealed_row(keyring, facts, sealed_fields, email=email, birthday=birthday)
    row["submit_token_hash"] = token_digest
    reference = insert_sealed_row(session, keyring, row, withdrawal_code=code)
    if reference is not None:
        return Receipt(reference, code)
    existing = _by_token(session, token_digest)
    if existing is None:  # the conflict was the token's, so its row exists
        raise RuntimeError("a submit token was taken, yet no row holds it")
    return _replay(existing.reference, existing.shredded_at, code)


def _replay(reference: str, shredded_at: datetime | None, code: str) -> Receipt:
    if shredded_at is not None:
        return Receipt(reference, None, replayed=True, withdrawn=True)
    return Receipt(reference, code, replayed=True)


_BY_TOKEN = select(SUBMISSIONS.c.reference, SUBMISSIONS.c.shredded_at).where(
    SUBMISSIONS.c.submit_token_hash == bindparam("token_digest")
)


def _by_token(session: Session, token_digest: bytes) -> Row[str, datetime | None] | None:
    return session.connection().execute(_BY_TOKEN, {"token_digest": token_digest}).one_or_none()


def withdraw_submission(session: Session, keyring: Keyring, reference: str, code: str) -> str:
    """Crypto-shred the submission if ``code`` is its withdrawal code; returns the reference.

    Unknown references cost the same digest as known ones, and both failures raise the same
    error. A refusal against a real reference is audited: repeated ones show guessing.
    Withdrawing twice is not an error (the person may not know the first one worked).
    """
    reference = normalize_code(reference)
    digest = _withdrawal_digest(keyring, reference, normalize_code(code))
    submission = session.scalars(
        select(Submission).where(Submission.reference == reference)
    ).one_or_none()
    stored = submission.withdrawal_code_hash if submission is not None else None
    if submission is None or stored is None or not hmac.compare_digest(stored, digest):
        if submission is not None:
            audit.record(session, actor="patient", action="withdrawal.refused", target=reference)
        raise WithdrawalRefused
    shred_submission(session, submission, actor="patient", reason="withdrawn_by_patient")
    return reference


def store_submission(
    session: Session,
    keyring: Keyring,
    facts: TriageFacts,
    sealed_fields: Mapping[str, Any],
    *,
    email: str | None = None,
    birthday: date | None = None,
) -> Submission:
    """Seal ``sealed_fields``, add the row (audited as received) and return it, loaded."""
    row = sealed_row(keyring, facts, sealed_fields, email=email, birthday=birthday)
    if insert_sealed_row(session, keyring, row) is None:
        raise RuntimeError("a fresh row conflicted with a stored one")  # only tokens can
    return session.get_one(Submission, row["id"])


def sealed_row(
    keyring: Keyring,
    facts: TriageFacts,
    sealed_fields: Mapping[str, Any],
    *,
    email: str | None,
    birthday: date | None,
) -> dict[str, Any]:
    """A new submission's columns, sealed. Touches no database: done before the transaction,
    so SQLite's write lock is not held while the HPKE seal and the keyed digests run."""
    row_id = uuid7()
    plaintext = json.dumps(dict(sealed_fields), ensure_ascii=False, sort_keys=True, default=str)
    blob = keyring.seal(plaintext.encode("utf-8"), binding=Submission(id=row_id).seal_binding())
    row: dict[str, Any] = {
        "id": row_id,
        "received_at": utcnow(),
        "status": "new",
        "cancer_type": facts.cancer_type,
        "age_band": facts.age_band,
        "source": facts.source,
        "consent_version": facts.consent_version,
        "consent_language": facts.consent_language,
        "authorization_expires_at": facts.authorization_expires_at,
        "consent_text_sha256": facts.consent_text_sha256,
        "signer_role": facts.signer_role,
        "signed_at": facts.signed_at,
        "key_id": blob.key_id,
        "wrapped_key": blob.wrapped_key,
        "sealed_payload": blob.ciphertext,
        "email_index": keyring.email_index(email) if email else None,
        "email_birthday_index": (
            keyring.email_birthday_index(email, birthday) if email and birthday else None
        ),
        "row_version": 1,
    }
    return row


def insert_sealed_row(
    session: Session,
    keyring: Keyring,
    row: dict[str, Any],
    *,
    withdrawal_code: str | None = None,
) -> str | None:
    """INSERT ``row`` under a fresh reference and audit it; None if its submit token is taken.

    ``INSERT ... ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL) meets a taken reference or
    token without failing the transaction, so no savepoint is needed: a taken reference is
    drawn again, a taken token means this form was sent before (a replay, or the loser of
    two racing sends, which on PostgreSQL waits for the winner's commit first). Any other
    unique value taken raises :class:`StorageConflict`; other constraints raise as usual.
    With ``withdrawal_code``, the row's ``withdrawal_code_hash`` (which depends on the
    reference) is set for whichever reference is finally drawn.
    """
    claim_for_sealing(session, row["key_id"])  # refuses a key retired since this host loaded it
    for _attempt in range(REFERENCE_ATTEMPTS):
        row["reference"] = new_reference()
        if withdrawal_code is not None:
            row["withdrawal_code_hash"] = _withdrawal_digest(
                keyring, row["reference"], withdrawal_code
            )
        if insert_unless_taken(session, SUBMISSIONS, row) is not None:
            audit.record(
                session,
                actor="patient",
                action="submission.received",
                target=row["reference"],
                details={"cancer_type": row["cancer_type"], "key_id": row["key_id"]},
            )
            return str(row["reference"])
        token = row.get("submit_token_hash")
        if token is not None and _by_token(session, token) is not None:
            return None
        if not _reference_taken(session, row["reference"]):  # a bug to surface, not to retry
            raise StorageConflict("the new row conflicts with a stored one elsewhere")
    raise RuntimeError("could not draw an unused reference code")  # 30^8 codes: never in practice


def _reference_taken(session: Session, reference: str) -> bool:
    query = select(Submission.id).where(Submission.reference == reference)
    return session.execute(query).first() is not None


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

    The row is re-read under a lock first (after the audit head: the lock order in
    :mod:`intake.audit`), so a rotation or another withdrawal that changed it since it was
    loaded is seen, not overwritten (nor reported as a conflict to the patient), and a note
    being added waits for the lock and is then refused. The sealed child rows (notes) go in
    the same transaction; migration 0006 refuses a shred that would leave any behind.
    On SQLite, call :func:`intake.database.checkpoint` after committing, so the old pages also
    leave the write-ahead log.
    """
    audit.lock_head(session)
    session.refresh(submission, with_for_update=True)
    if submission.shredded_at is not None:
        return
    for child in SEALED_CHILDREN:  # sealed PHI too
        session.execute(delete(child).where(child.submission_id == submission.id))
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
