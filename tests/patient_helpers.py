"""Filling in the patient form through real HTTP: GET the page, keep its hidden fields, POST."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"')
SUMMARY_LINK = re.compile(r'<div class="error-summary".*?</div>', re.S)


def today() -> date:
    return datetime.now(UTC).date()


def valid_answers(marker: str = "MARKER", **overrides: Any) -> dict[str, str]:
    """A complete, valid form for an adult filling it in for themselves."""
    answers = {
        "filler": "self",
        "representative_authority": "",
        "cancer_type": "breast",
        "cancer_other": "",
        "birth_day": "14",
        "birth_month": "7",
        "birth_year": "1968",
        "full_name": f"Ana {marker}",
        "email": f"ana.{marker.lower()}@example.org",
        "phone": "(415) 555-2671",
        "postal_code": "94110",
        "country": "US",
        "contact_method": "email",
        "agree": "y",
        "signature": f"Ana {marker}",
    }
    answers.update(overrides)
    return answers


def hidden_fields(html: str) -> dict[str, str]:
    return dict(HIDDEN.findall(html))


def open_form(client: FlaskClient, path: str = "/", **headers: str) -> dict[str, str]:
    """GET the form; return its hidden fields (CSRF, idempotency token, consent version)."""
    response = client.get(path, headers=headers)
    assert response.status_code == 200
    return hidden_fields(response.get_data(as_text=True))


def send(
    client: FlaskClient,
    answers: dict[str, str],
    path: str = "/",
    hidden: dict[str, str] | None = None,
    **headers: str,
) -> TestResponse:
    """POST ``answers`` as a browser would after loading the form at ``path``."""
    fields = hidden if hidden is not None else open_form(client, path)
    return client.post(path, data={**fields, **answers}, headers=headers)


def error_links(html: str) -> list[tuple[str, str]]:
    """The error summary's (anchor, message) pairs, in page order."""
    summary = SUMMARY_LINK.search(html)
    if summary is None:
        return []
    return re.findall(r'<a href="#([^"]+)">([^<]+)</a>', summary.group(0))
