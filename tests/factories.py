"""Submissions made through the real services, for tests that need stored records."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from intake.models import Submission
from intake.sealing import Keyring
from intake.submissions import TriageFacts, store_submission


def facts(**overrides: Any) -> TriageFacts:
    values: dict[str, Any] = {
        "cancer_type": "breast",
        "age_band": "40-49",
        "consent_version": "2026-11-en-1",
        "consent_language": "en",
        "authorization_expires_at": datetime.now(UTC) + timedelta(days=365),
        "source": "test",
    }
    values.update(overrides)
    return TriageFacts(**values)


def personal(marker: str) -> dict[str, Any]:
    """Identifying fields, each carrying ``marker`` so raw storage can be searched for it."""
    return {
        "full_name": f"NAME-{marker}",
        "email": f"email-{marker.lower()}@example.org",
        "phone": f"+1 555 {marker}",
        "postal_code": f"ZIP-{marker}",
        "birthday": "1980-01-31",
        "free_text": f"FREETEXT-{marker}",
        "signature": f"SIGNATURE-{marker}",
    }


def make_submission(
    session: Session, keyring: Keyring, marker: str, **fact_overrides: Any
) -> Submission:
    fields = personal(marker)
    return store_submission(
        session,
        keyring,
        facts(**fact_overrides),
        fields,
        email=fields["email"],
        birthday=date(1980, 1, 31),
    )
