"""Withdrawal at /withdraw: the codes from the confirmation crypto-shred the submission.

A mismatch answers one generic page whether the reference exists or not; refusals against a
real reference are audited (guessing shows up), and after withdrawal the sealed bytes are gone
from the SQLite files, write-ahead log included.
"""

from __future__ import annotations

import re
import time
from http.cookiejar import CookieJar
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, build_opener

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import Database
from tests.patient_helpers import error_links, hidden_fields, send, valid_answers
from tests.test_patient_flow import (
    CODE,
    REFERENCE,
    audit_rows,
    confirmation,
    submissions,
    without_csrf,
)

WRONG_CODE = "WXYZ-2345-EFGH"


def submit(client: FlaskClient, marker: str = "MARKER") -> tuple[str, str]:
    """Send a valid form; return the (reference, withdrawal code) its confirmation shows."""
    _page, reference, code = confirmation(client, send(client, valid_answers(marker)))
    return reference, code


def withdraw(client: FlaskClient, reference: str, code: str) -> TestResponse:
    page = client.get("/withdraw").get_data(as_text=True)
    response = client.post(
        "/withdraw", data={**hidden_fields(page), "reference": reference, "code": code}
    )
    response.close()  # as a server does once the answer is sent: runs the WAL checkpoint
    return response


def test_withdrawal_shreds_the_submission(app: Flask, client: FlaskClient) -> None:
    reference, code = submit(client)
    response = withdraw(client, reference, code)
    assert response.status_code == 303
    assert response.headers["Location"].split("?")[0] == "/withdraw/done"
    done = client.get(response.headers["Location"])
    assert done.status_code == 200
    assert "Your authorization is withdrawn" in done.get_data(as_text=True)

    [row] = submissions(app)
    assert row.reference == reference
    assert (row.status, row.shredded_at is not None) == ("withdrawn", True)
    sealed = (row.key_id, row.wrapped_key, row.sealed_payload)
    assert sealed == (None, None, None)
    assert (row.email_index, row.email_birthday_index) == (None, None)
    assert row.consent_text_sha256 and row.signed_at  # the tombstone keeps the consent record
    assert [(e.action, e.target) for e in audit_rows(app)] == [
        ("submission.received", reference),
        ("submission.shredded", reference),
    ]
    assert '"reason":"withdrawn_by_patient"' in audit_rows(app)[-1].details

    # The person may not know the first attempt worked: the same codes succeed again.
    again = withdraw(client, reference, code)
    assert again.status_code == 303
    assert again.headers["Location"] == response.headers["Location"]
    assert [e.action for e in audit_rows(app)].count("submission.shredded") == 1


def test_codes_are_read_the_way_people_type_them(app: Flask, client: FlaskClient) -> None:
    typings = [
        lambda ref, code: (ref.lower(), code.lower()),
        lambda ref, code: (f"  {ref.replace('-', ' ')} ", code.replace("-", " ")),
        lambda ref, code: (ref.replace("-", ""), code.replace("-", "").lower()),
    ]
    for number, typed in enumerate(typings):
        reference, code = submit(client, f"Typed{'abc'[number]}")
        response = withdraw(client, *typed(reference, code))
        assert response.status_code == 303, (reference, code)
    assert {row.status for row in submissions(app)} == {"withdrawn"}


def _generic(page: str, *typed: str) -> str:
    """The page without the CSRF token and without what the person typed back into it."""
    page = without_csrf(page)
    for value in typed:
        page = page.replace(f'value="{value}"', 'value="TYPED"')
    return page


def test_a_wrong_code_and_an_unknown_reference_look_the_same(
    app: Flask, client: FlaskClient
) -> None:
    reference, code = submit(client)
    wrong = withdraw(client, reference, WRONG_CODE)
    unknown = withdraw(client, "ZZZZ-ZZZZ", WRONG_CODE)
    assert wrong.status_code == unknown.status_code == 422
    wrong_page = wrong.get_data(as_text=True)
    assert "We could not match that reference code and withdrawal code." in wrong_page
    assert _generic(wrong_page, reference) == _generic(unknown.get_data(as_text=True), "ZZZZ-ZZZZ")
    assert wrong.headers["Cache-Control"] == "no-store"

    # Only the refusal against a real reference is audited: no code, no details.
    events = audit_rows(app)
    assert [(e.action, e.actor, e.target) for e in events] == [
        ("submission.received", "patient", reference),
        ("withdrawal.refused", "patient", reference),
    ]
    assert events[-1].details == "{}"
    assert WRONG_CODE not in events[-1].details and code not in events[-1].details
    [row] = submissions(app)
    assert row.shredded_at is None and row.sealed_payload is not None


def test_another_submissions_code_does_not_withdraw(app: Flask, client: FlaskClient) -> None:
    reference, _code = submit(client, "FIRST")
    _other_reference, other_code = submit(client, "SECOND")
    assert withdraw(client, reference, other_code).status_code == 422
    assert {row.status for row in submissions(app)} == {"new"}


@pytest.mark.parametrize(
    ("typed", "anchors"),
    [
        ({"reference": "", "code": ""}, ["reference", "code"]),
        ({"reference": "   ", "code": "ABCD-2345-EFGH"}, ["reference"]),
        ({"reference": "ABCD-2345", "code": "ABCD"}, ["code"]),
        ({"reference": "ABCD-2345-6789", "code": "<script>x</script>"}, ["reference", "code"]),
        ({"reference": "ÀBCD-2345", "code": "ABCD-2345-EFGH\x00"}, ["reference"]),
    ],
)
def test_badly_shaped_codes_get_field_errors(
    sqlite_app: Flask, typed: dict[str, str], anchors: list[str]
) -> None:
    client = sqlite_app.test_client()
    page = client.get("/withdraw").get_data(as_text=True)
    response = client.post("/withdraw", data={**hidden_fields(page), **typed})
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert [anchor for anchor, _message in error_links(text)] == anchors
    for anchor in anchors:
        assert f'id="{anchor}-error"' in text
    assert "<script>x" not in text
    assert audit_rows(sqlite_app) == []


def test_sealed_bytes_leave_the_sqlite_files(sqlite_app: Flask, sqlite_db: Database) -> None:
    client = sqlite_app.test_client()
    reference, code = submit(client, "WALGONE")
    [row] = submissions(sqlite_app)
    payload, wrapped = row.sealed_payload, row.wrapped_key
    assert payload is not None and wrapped is not None
    assert payload in sqlite_db.raw_bytes()  # the search below finds it when it is there
    assert withdraw(client, reference, code).status_code == 303
    raw = sqlite_db.raw_bytes()
    for blob in (payload, wrapped):
        assert blob not in raw
        assert blob[:32] not in raw and blob[-32:] not in raw
    wal = sqlite_db.sqlite_path.with_name(sqlite_db.sqlite_path.name + "-wal")  # type: ignore[union-attr]
    assert not wal.exists() or wal.stat().st_size == 0


def test_withdraw_page_language_switch_keeps_the_codes(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    page = client.get("/withdraw").get_data(as_text=True)
    assert 'name="switch_language" value="es" formaction="/withdraw?lang=es"' in page
    typed = {"reference": "ABCD-2345", "code": WRONG_CODE, "switch_language": "es"}
    switched = client.post("/withdraw?lang=es", data={**hidden_fields(page), **typed})
    assert switched.status_code == 200
    text = switched.get_data(as_text=True)
    assert '<html lang="es">' in text
    assert 'value="ABCD-2345"' in text and f'value="{WRONG_CODE}"' in text
    assert re.search(r'action="/withdraw\?lang=es"', text)
    assert audit_rows(sqlite_app) == []


def test_a_replayed_form_never_brings_withdrawn_data_back(app: Flask, client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    body = {**hidden_fields(page), **valid_answers("Revived")}
    _page, reference, code = confirmation(client, client.post("/", data=body))
    assert withdraw(client, reference, code).status_code == 303
    replay = client.post("/", data=body)  # the old page, sent again (history, restored tab)
    assert replay.status_code == 303
    assert replay.headers["Location"].startswith("/withdraw/done")  # told, not thanked again
    [row] = submissions(app)
    assert row.shredded_at is not None and row.sealed_payload is None


def test_a_real_server_empties_the_write_ahead_log_after_withdrawal(
    live_server: str, live_app: Flask, sqlite_db: Database
) -> None:
    """Over real HTTP the server closes the response itself, and the checkpoint follows."""
    browser = build_opener(HTTPCookieProcessor(CookieJar()))

    def post(path: str, fields: dict[str, str]) -> str:
        page = browser.open(live_server + path).read().decode()
        data = urlencode({**hidden_fields(page), **fields}).encode()
        with browser.open(live_server + path, data=data) as answer:  # follows the 303
            return f"{answer.url}\n{answer.read().decode()}"

    confirmation_page = post("/", valid_answers("Liveserver"))
    reference, code = REFERENCE.search(confirmation_page), CODE.search(confirmation_page)
    assert reference is not None and code is not None
    [row] = submissions(live_app)
    assert row.sealed_payload is not None
    done = post("/withdraw", {"reference": reference.group(1), "code": code.group(1)})
    assert "/withdraw/done" in done.splitlines()[0]
    deadline = time.monotonic() + 10
    while row.sealed_payload in sqlite_db.raw_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)  # the checkpoint runs just after the answer has gone out
    assert row.sealed_payload not in sqlite_db.raw_bytes()
