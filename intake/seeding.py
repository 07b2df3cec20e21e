"""Development data at scale: ``flask --app intake dev seed N`` (refused in production).

Realistic, varied submissions for the benchmarks in ``bench/`` (dashboard, export, rotation),
sealed exactly as in production: the same :meth:`Keyring.seal` of the same JSON fields with
the same binding, the same blind indexes (email, email+birthday, submit token, withdrawal
code), and a ``sealing_keys`` claim for the key. What differs from ``store_submission``:

- rows are bulk inserted (one executemany per batch, one transaction per batch) instead of
  one flush and one savepoint per row;
- no ``submission.received`` audit row per submission. The whole run writes ONE audit row,
  ``dev.seeded``, with the number of rows, through :func:`audit.record`, so the hash chain
  stays intact and ``audit verify`` passes;
- references are drawn from the OS's random source like production's, kept unique within
  the run; a batch that meets an existing reference is retried with fresh ones.

Sealing is the cost (about 75 µs per row with ML-KEM-768+X25519), so it runs in a pool of
worker processes (spawned, so no database connection is shared) while this process inserts.
Each worker loads the keyring's public half only: sealing needs no private key. What each
row looks like (cancer type, status, dates, ages, sources...) follows ``seed``: the same seed
gives the same distribution of plaintext facts; keys, ids, references and ciphertexts are
random every time, as they are in production.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from intake import audit
from intake.keys import claim_for_sealing
from intake.models import Submission, User
from intake.sealing import Keyring
from intake.submissions import REFERENCE_ALPHABET, REFERENCE_LENGTH, WITHDRAWAL_CODE_LENGTH
from intake.triage import TRIAGE_ROLES

DEFAULT_BATCH = 5000
DEFAULT_DAYS = 700  # under the 730-day authorization, so seeded rows are not yet expired
WITHDRAWN_SHARE = 0.01
REFERENCE_RETRIES = 5

# A skewed (roughly Zipf) share per cancer type: the common ones first, every code present.
COMMON_TYPES = {
    "breast": 18.0,
    "lung_nsclc": 11.0,
    "colorectal": 9.0,
    "prostate": 8.0,
    "melanoma": 4.0,
    "pancreatic": 3.5,
    "ovarian": 3.0,
    "bladder": 3.0,
    "kidney": 2.5,
    "dlbcl": 2.5,
    "myeloma": 2.0,
    "endometrial": 2.0,
    "glioblastoma": 1.5,
    "head_neck": 1.5,
    "liver": 1.5,
    "aml": 1.5,
    "other_not_sure": 2.0,
}
RARE_TYPE_WEIGHT = 0.5
AGE_BAND_WEIGHTS = {"0-17": 2, "18-39": 10, "40-64": 45, "65-79": 35, "80+": 8}
AGE_RANGES = {
    "0-17": (1, 17),
    "18-39": (18, 39),
    "40-64": (40, 64),
    "65-79": (65, 79),
    "80+": (80, 95),
}
SOURCE_WEIGHTS: dict[str | None, float] = {
    None: 30,
    "clinic-poster": 15,
    "newsletter": 12,
    "facebook-spring": 10,
    "search-ad": 8,
    "hospital.example.org/trials": 7,
    "patient-group": 5,
    "radio": 3,
    "referral-letter": 3,
    "instagram": 2,
    "podcast": 1,
    "conference-2025": 1,
}
# Statuses by how long ago the submission arrived: young ones are new, old ones further along.
STATUS_BY_AGE: tuple[tuple[int, dict[str, float]], ...] = (
    (14, {"new": 70, "in_review": 20, "contacted": 5, "not_eligible": 5}),
    (
        60,
        {
            "new": 15,
            "in_review": 30,
            "contacted": 25,
            "records_requested": 12,
            "not_eligible": 12,
            "unreachable": 6,
        },
    ),
    (
        10_000,
        {
            "new": 3,
            "in_review": 5,
            "contacted": 8,
            "records_requested": 10,
            "records_received": 10,
            "referred": 16,
            "not_eligible": 32,
            "unreachable": 16,
        },
    ),
)
STEPS = {  # how many changes each status took (row_version - 1), roughly
    "new": 0,
    "in_review": 1,
    "contacted": 2,
    "records_requested": 3,
    "records_received": 4,
    "referred": 5,
    "not_eligible": 2,
    "unreachable": 3,
}
FIRST_NAMES = [
    "Maria",
    "Jose",
    "Ana",
    "Luis",
    "Carmen",
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Linda",
    "Michael",
    "Barbara",
    "David",
    "Elizabeth",
    "William",
    "Jennifer",
    "Richard",
    "Susan",
    "Thomas",
    "Jessica",
    "Sofia",
    "Mateo",
    "Valentina",
    "Diego",
    "Aisha",
    "Wei",
    "Mei",
    "Hiroshi",
    "Yuki",
    "Olga",
    "Ivan",
    "Fatima",
    "Omar",
    "Priya",
    "Arjun",
    "Chloe",
    "Liam",
    "Emma",
    "Noah",
    "Zoe",
]
LAST_NAMES = [
    "Garcia",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Perez",
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Nguyen",
    "Kim",
    "Chen",
    "Wang",
    "Patel",
    "Singh",
    "Kowalski",
    "Novak",
    "Ivanova",
    "Okafor",
    "Mensah",
    "Haddad",
    "Cohen",
    "Rossi",
]
COUNTRIES = {"US": 85, "MX": 5, "CA": 4, "PR": 3, "ES": 2, "GB": 1}


@dataclass(frozen=True)
class Setting:
    """What every worker needs to make rows: the same for the whole run."""

    keys_dir: str | None
    passphrase: bytes | None
    now: datetime
    days: int
    seed: int
    cancer_types: tuple[str, ...]
    assignees: tuple[int, ...]
    consent_version: str
    consent_sha256: dict[str, str]  # by language
    expires_after_days: int


@dataclass(frozen=True)
class SeedResult:
    inserted: int
    withdrawn: int
    batches: int


def cancer_weights(codes: Sequence[str]) -> list[float]:
    return [COMMON_TYPES.get(code, RARE_TYPE_WEIGHT) for code in codes]


def _uuid7_at(moment: datetime, rng_bytes: bytes) -> uuid.UUID:
    """A version 7 UUID for ``moment`` (ids sort like production's: by arrival time)."""
    millis = int(moment.timestamp() * 1000)
    value = (millis & ((1 << 48) - 1)) << 80
    value |= int.from_bytes(rng_bytes, "big") & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return uuid.UUID(int=value)


def _birthday(rng: random.Random, band: str, on: date) -> date:
    low, high = AGE_RANGES[band]
    age = rng.randint(low, high)
    days_into_year = rng.randint(1, 364)
    return on - timedelta(days=age * 365 + age // 4 + days_into_year)


def _status(rng: random.Random, age_days: float) -> str:
    for limit, weights in STATUS_BY_AGE:
        if age_days < limit:
            return rng.choices(list(weights), list(weights.values()))[0]
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- the workers

_worker_keyring: Keyring | None = None


def _init_worker(keys_dir: str, passphrase: bytes | None) -> None:
    global _worker_keyring
    # Sealing and blind indexes need no private key: load the public half only.
    _worker_keyring = Keyring.load(Path(keys_dir), with_private=False, passphrase=passphrase)


def make_chunk(
    setting: Setting, chunk: int, count: int, keyring: Keyring | None = None
) -> list[dict[str, Any]]:
    """``count`` sealed rows (without their reference), deterministic in their facts."""
    keyring = keyring or _worker_keyring
    if keyring is None:
        raise RuntimeError("sealing worker not initialised")
    rng = random.Random(f"{setting.seed}:{chunk}")  # noqa: S311  # nosec B311  # fake data only
    weights = cancer_weights(setting.cancer_types)
    key_id = keyring.sealing_key_id
    sources, source_weights = list(SOURCE_WEIGHTS), list(SOURCE_WEIGHTS.values())
    bands, band_weights = list(AGE_BAND_WEIGHTS), list(AGE_BAND_WEIGHTS.values())
    countries, country_weights = list(COUNTRIES), list(COUNTRIES.values())
    expires_after = timedelta(days=setting.expires_after_days)
    span = setting.days * 86400.0
    rows: list[dict[str, Any]] = []
    for _ in range(count):
        # More recent submissions are more frequent (the service grows): density ~ (1 - age)^-ish
        age_seconds = span * (1 - rng.random() ** 0.7)
        received = setting.now - timedelta(seconds=age_seconds)
        age_days = age_seconds / 86400
        row_id = _uuid7_at(received, os.urandom(10))
        cancer = rng.choices(setting.cancer_types, weights)[0]
        band = rng.choices(bands, band_weights)[0]
        language = "es" if rng.random() < 0.2 else "en"
        signer = (
            "parent_guardian"
            if band == "0-17"
            else ("legal_representative" if rng.random() < 0.03 else "self")
        )
        row: dict[str, Any] = {
            "id": row_id,
            "received_at": received,
            "cancer_type": cancer,
            "age_band": band,
            "source": rng.choices(sources, source_weights)[0],
            "consent_version": setting.consent_version,
            "consent_language": language,
            "authorization_expires_at": received + expires_after,
            "consent_text_sha256": setting.consent_sha256[language],
            "signer_role": signer,
            "signed_at": received,
            "submit_token_hash": keyring.blind_index("submit-token", secrets.token_urlsafe(32)),
            "withdrawal_code": "".join(
                secrets.choice(REFERENCE_ALPHABET) for _ in range(WITHDRAWAL_CODE_LENGTH)
            ),
        }
        if rng.random() < WITHDRAWN_SHARE:  # a tombstone: crypto-shredded on withdrawal
            row.update(
                status="withdrawn",
                row_version=2,
                assignee_id=None,
                shredded_at=received + timedelta(days=min(age_days, rng.uniform(0.1, 30))),
                key_id=None,
                wrapped_key=None,
                sealed_payload=None,
                email_index=None,
                email_birthday_index=None,
            )
            rows.append(row)
            continue
        status = _status(rng, age_days)
        assigned = setting.assignees and (status != "new" or rng.random() < 0.2)
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        birthday = _birthday(rng, band, received.date())
        has_email = rng.random() < 0.85
        email = f"{first}.{last}{rng.randint(1, 9999)}@example.org".lower() if has_email else None
        phone = (
            f"+1 {rng.randint(201, 989)} 555 {rng.randint(0, 9999):04d}"
            if not has_email or rng.random() < 0.6
            else None
        )
        fields = {
            "full_name": f"{first} {last}",
            "birthday": birthday.isoformat(),
            "email": email,
            "phone": phone,
            "postal_code": f"{rng.randint(1000, 99999):05d}",
            "country": rng.choices(countries, country_weights)[0],
            "contact_method": "email" if email and (not phone or rng.random() < 0.6) else "phone",
            "cancer_other": "Not sure of the name" if cancer == "other_not_sure" else None,
            "representative_authority": None if signer == "self" else "Parent of the patient",
            "signature": f"{first} {last}",
        }
        plaintext = json.dumps(fields, ensure_ascii=False, sort_keys=True, default=str)
        blob = keyring.seal(plaintext.encode("utf-8"), binding=f"submissions:{row_id}")
        row.update(
            status=status,
            row_version=1 + STEPS[status],
            assignee_id=rng.choice(setting.assignees) if assigned else None,
            shredded_at=None,
            key_id=key_id,
            wrapped_key=blob.wrapped_key,
            sealed_payload=blob.ciphertext,
            email_index=keyring.email_index(email) if email else None,
            email_birthday_index=(keyring.email_birthday_index(email, birthday) if email else None),
        )
        rows.append(row)
    return rows


def _chunk_job(job: tuple[Setting, int, int]) -> list[dict[str, Any]]:
    setting, chunk, count = job
    return make_chunk(setting, chunk, count)


# ---------------------------------------------------------------------------- the inserter


def _reference() -> str:
    code = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))
    return f"{code[:4]}-{code[4:]}"


def _finish_rows(
    keyring: Keyring, rows: list[dict[str, Any]], used: set[str]
) -> list[dict[str, Any]]:
    """Give each row a fresh unique reference and the withdrawal digest that goes with it."""
    finished = []
    for row in rows:
        reference = _reference()
        while reference in used:
            reference = _reference()
        used.add(reference)
        values = {k: v for k, v in row.items() if k != "withdrawal_code"}
        values["reference"] = reference
        code = row["withdrawal_code"]
        grouped = "-".join(code[start : start + 4] for start in range(0, len(code), 4))
        values["withdrawal_code_hash"] = (
            None
            if row["status"] == "withdrawn"
            else keyring.blind_index("withdrawal", f"{reference}|{grouped}")
        )
        finished.append(values)
    return finished


def _insert_batch(
    session: Session, keyring: Keyring, rows: list[dict[str, Any]], used: set[str], key_id: str
) -> None:
    """One transaction: the key claim and one executemany; retried on a reference clash."""
    for attempt in range(REFERENCE_RETRIES):
        values = _finish_rows(keyring, rows, used)
        try:
            claim_for_sealing(session, key_id)
            session.execute(insert(cast(Table, Submission.__table__)), values)
            session.commit()
            return
        except IntegrityError as error:
            session.rollback()
            if "reference" not in str(error.orig) or attempt == REFERENCE_RETRIES - 1:
                raise


def _plan(count: int, batch: int) -> list[int]:
    sizes = [batch] * (count // batch)
    if count % batch:
        sizes.append(count % batch)
    return sizes


def seed(
    session: Session,
    keyring: Keyring,
    count: int,
    *,
    batch: int = DEFAULT_BATCH,
    seed_value: int = 42,
    days: int = DEFAULT_DAYS,
    keys_dir: Path | None = None,
    passphrase: bytes | None = None,
    workers: int | None = None,
    actor: str = "cli:seed",
    on_batch: Callable[[int], None] = lambda _n: None,
) -> SeedResult:
    """Insert ``count`` sealed submissions, a committed batch at a time, then audit the run.

    ``workers``: sealing processes (None: one per core when there is a folder and enough
    rows, else in this process). ``keys_dir`` is where workers load the public keys from.
    """
    from intake import consent

    texts = {language: consent.active_text(language) for language in ("en", "es")}
    assignees = tuple(
        session.scalars(
            select(User.id)
            .where(User.role.in_(TRIAGE_ROLES), User.disabled_at.is_(None))
            .order_by(User.id)
        )
    )
    session.commit()
    setting = Setting(
        keys_dir=str(keys_dir) if keys_dir else None,
        passphrase=passphrase,
        now=datetime.now(UTC),
        days=days,
        seed=seed_value,
        cancer_types=_cancer_codes(),
        assignees=assignees,
        consent_version=texts["en"].version,
        consent_sha256={language: text.sha256() for language, text in texts.items()},
        expires_after_days=texts["en"].expires_after.days,
    )
    key_id = keyring.sealing_key_id
    sizes = _plan(count, batch)
    if workers is None:
        workers = (os.cpu_count() or 1) if keys_dir is not None and count >= 4 * batch else 0
    used: set[str] = set()
    inserted = withdrawn = 0
    for rows in _chunks(setting, sizes, workers, keyring):
        _insert_batch(session, keyring, rows, used, key_id)
        inserted += len(rows)
        withdrawn += sum(1 for row in rows if row["status"] == "withdrawn")
        on_batch(len(rows))
    audit.record(
        session,
        actor=actor,
        action="dev.seeded",
        details={"rows": inserted, "withdrawn": withdrawn, "seed": seed_value, "key_id": key_id},
    )
    session.commit()
    return SeedResult(inserted, withdrawn, len(sizes))


def _chunks(
    setting: Setting, sizes: list[int], workers: int, keyring: Keyring
) -> Iterator[list[dict[str, Any]]]:
    jobs = [(setting, index, size) for index, size in enumerate(sizes)]
    if workers <= 0 or setting.keys_dir is None:
        for _setting, index, size in jobs:
            yield make_chunk(setting, index, size, keyring)
        return
    context = multiprocessing.get_context("spawn")  # no inherited database connections
    with context.Pool(
        workers, initializer=_init_worker, initargs=(setting.keys_dir, setting.passphrase)
    ) as pool:
        # In order, with sealing running ahead of the inserts by a bounded window of batches
        # (Pool.imap would queue every batch at once and hold its results in memory).
        window = deque(pool.apply_async(_chunk_job, (job,)) for job in jobs[: 2 * workers])
        following = iter(jobs[2 * workers :])
        while window:
            rows = window.popleft().get()
            job = next(following, None)
            if job is not None:
                window.append(pool.apply_async(_chunk_job, (job,)))
            yield rows


def _cancer_codes() -> tuple[str, ...]:
    from intake.vocabulary import vocabulary

    return tuple(kind.code for _group, kinds in vocabulary().grouped() for kind in kinds)
