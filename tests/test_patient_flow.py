"""After "Send": sealing, confirmation, idempotency, anti-abuse, languages, and no PHI anywhere.

Every test drives the public pages over the test client the way a browser would (GET the form,
keep its hidden fields, POST) and checks what a person, a bot or a privacy officer would see.
Withdrawal lives in ``test_withdrawal.py``, embedding in ``test_embed.py``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from markupsafe import escape
from sqlalchemy import delete, select
from werkzeug.test import TestResponse

from intake import consent
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import AuditEvent, DailyCount, Submission
from intake.submissions import REFERENCE_ALPHABET, open_submission
from intake.web import IntakeSessionInterface
from tests.conftest import AppFactory, Database
from tests.patient_helpers import hidden_fields, open_form, send, valid_answers

CODE = re.compile(r'id="withdrawal-code">([^<]*)<')
REFERENCE = re.compile(r'id="reference">([^<]*)<')
CSRF_FIELD = re.compile(r'name="csrf_token" value="[^"]*"')
GROUPED = re.compile(rf"[{REFERENCE_ALPHABET}]{{4}}(-[{REFERENCE_ALPHABET}]{{4}}){{2}}")
TYPED_FIELDS = ("full_name", "email", "phone", "postal_code", "birth_day", "birth_month")


# ---------------------------------------------------------------------------- helpers


def cookie_name(app: Flask) -> str:
    return str(app.config["SESSION_COOKIE_NAME"])


def session_of(app: Flask, client: FlaskClient) -> dict[str, Any]:
    """The Flask session as the browser holds it (signed, not encrypted: anyone can read it)."""
    cookie = client.get_cookie(cookie_name(app))
    assert cookie is not None, "no session cookie"
    serializer = IntakeSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    loaded: dict[str, Any] = serializer.loads(cookie.value)
    return loaded


def submissions(app: Flask) -> list[Submission]:
    with app.app_context():
        rows = list(db.session.scalars(select(Submission).order_by(Submission.received_at)))
        db.session.commit()  # ends the read; objects keep their values (expire_on_commit off)
        return rows


def audit_rows(app: Flask) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        db.session.commit()
        return rows


def honeypot_count(app: Flask) -> int:
    with app.app_context():
        total = db.session.scalar(select(DailyCount.count).where(DailyCount.name == "honeypot"))
        db.session.rollback()
        return int(total or 0)


def clear_counters(app: Flask) -> None:
    """The PostgreSQL test database is reset table by table; counters are not among them."""
    with app.app_context():
        db.session.execute(delete(DailyCount))
        db.session.commit()


def confirmation(client: FlaskClient, response: TestResponse) -> tuple[str, str, str]:
    """Follow a 303 to its confirmation: (page, reference, withdrawal code)."""
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    page = client.get(response.headers["Location"])
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    reference = REFERENCE.search(text)
    code = CODE.search(text)
    assert reference is not None and code is not None, "reference or withdrawal code missing"
    return text, reference.group(1), code.group(1)


def without_csrf(page: str) -> str:
    return CSRF_FIELD.sub('name="csrf_token" value=""', page)


def assert_kept(page: str, answers: dict[str, str]) -> None:
    """Every value the person typed is back in the page."""
    for name in TYPED_FIELDS:
        assert f'name="{name}"' in page
        assert f'value="{escape(answers[name])}"' in page, f"{name} was not kept"
    assert f'<option value="{answers["cancer_type"]}" selected>' in page
    assert 'id="agree" name="agree" type="checkbox" value="y" checked' in page
    assert f'value="{escape(answers["signature"])}"' in page


def signed_text(app: Flask, language: str = "en") -> consent.ConsentText:
    with app.app_context():
        return consent.signed_text(consent.ACTIVE_VERSION, language)


# ---------------------------------------------------------------------------- seal and redirect


def test_valid_form_is_sealed_with_its_consent_record(app: Flask, client: FlaskClient) -> None:
    response = send(client, valid_answers(filler="parent", birth_year="2012"))
    assert response.status_code == 303
    location = response.headers["Location"]
    assert re.fullmatch(r"/confirmation/[A-Z0-9]{4}-[A-Z0-9]{4}\?lang=en", location)

    [row] = submissions(app)
    assert location.startswith(f"/confirmation/{row.reference}")
    text = signed_text(app, "en")
    assert (row.consent_version, row.consent_language) == (consent.ACTIVE_VERSION, "en")
    assert row.consent_text_sha256 == text.sha256()
    assert row.signer_role == "parent_guardian"
    assert row.status == "new" and row.shredded_at is None
    assert row.signed_at is not None
    assert row.authorization_expires_at == row.signed_at + text.expires_after
    assert row.submit_token_hash and row.withdrawal_code_hash
    assert row.sealed_payload and row.wrapped_key and row.key_id
    assert (row.cancer_type, row.age_band) == ("breast", "0-17")
    assert abs(datetime.now(UTC) - row.signed_at) < timedelta(minutes=1)
    received = [(e.action, e.target) for e in audit_rows(app)]
    assert received == [("submission.received", row.reference)]
    with app.app_context():  # what was sealed is what was typed (opening is audited)
        opened = open_submission(db.session(), current_keyring(), row, actor="user:1")
        db.session.commit()
    assert opened["full_name"] == opened["signature"] == "Ana MARKER"
    assert (opened["birthday"], opened["phone"]) == ("2012-07-14", "+14155552671")


# ---------------------------------------------------------------------------- confirmation


def test_confirmation_shows_codes_next_steps_and_the_exact_text_signed(
    make_app: AppFactory,
) -> None:
    app = make_app(CONTACT_WITHIN_DAYS=7)
    client = app.test_client()
    response = send(client, valid_answers())
    page, reference, code = confirmation(client, response)
    [row] = submissions(app)
    assert reference == row.reference
    assert GROUPED.fullmatch(code), code
    assert "within 7 business days" in page

    text = signed_text(app)
    positions = [page.index(str(escape(text.title)))]
    for section in text.sections:
        if section.heading is not None:
            positions.append(page.index(str(escape(section.heading)), positions[-1]))
        for paragraph in section.paragraphs:
            positions.append(page.index(str(escape(paragraph)), positions[-1]))
    positions.append(page.index(str(escape(text.agreement)), positions[-1]))
    assert positions == sorted(positions)

    assert row.signed_at is not None
    with app.test_request_context("/"):
        from flask_babel import format_date, format_datetime

        signed = format_datetime(row.signed_at, "medium")
        ends = format_date(row.authorization_expires_at, "long")
    assert f"Signed on {escape(signed)} (UTC)" in page
    assert str(escape(ends)) in page


def test_confirmation_is_private_to_the_session_that_sent_the_form(
    app: Flask, client: FlaskClient
) -> None:
    response = send(client, valid_answers())
    _page, reference, code = confirmation(client, response)
    assert client.get(response.headers["Location"]).headers["Cache-Control"] == "no-store"

    stranger = app.test_client()
    shared = stranger.get(response.headers["Location"])
    unknown = stranger.get("/confirmation/ZZZZ-ZZZZ?lang=en")
    assert shared.status_code == unknown.status_code == 404
    shared_text = shared.get_data(as_text=True)
    assert code not in shared_text and "Thank you" not in shared_text
    assert "withdrawal" not in shared_text.lower()
    # The same page either way (the address itself is echoed in the language links only).
    assert shared_text.replace(reference, "REF") == unknown.get_data(as_text=True).replace(
        "ZZZZ-ZZZZ", "REF"
    )
    assert shared.headers["Cache-Control"] == "no-store"
    # Another session that sent its own form still cannot see the first one.
    send(stranger, valid_answers("OTHER"))
    assert stranger.get(response.headers["Location"]).status_code == 404


# ---------------------------------------------------------------------------- idempotency


def test_double_click_refresh_and_replay_give_one_record(app: Flask, client: FlaskClient) -> None:
    hidden = open_form(client)
    answers = valid_answers()
    first = send(client, answers, hidden=hidden)
    _page, reference, code = confirmation(client, first)
    second = send(client, answers, hidden=hidden)  # double click / refresh (re-POST)
    assert second.status_code == 303
    assert second.headers["Location"] == first.headers["Location"]
    client.get("/")  # back to the form...
    replay = send(client, answers, hidden=hidden)  # ...and the old page is sent again
    assert replay.headers["Location"] == first.headers["Location"]
    _page, again, code_again = confirmation(client, replay)
    assert (again, code_again) == (reference, code)
    assert len(submissions(app)) == 1
    assert [e.action for e in audit_rows(app)] == ["submission.received"]


def test_a_double_click_answered_out_of_order_still_shows_the_withdrawal_code(
    app: Flask,
) -> None:
    """Both clicks carry the cookie from before sending; the browser shows the second answer."""
    first_click = app.test_client()
    hidden = open_form(first_click)
    before = first_click.get_cookie(cookie_name(app))
    assert before is not None
    second_click = app.test_client()
    second_click.set_cookie(cookie_name(app), before.value)
    answers = valid_answers()
    _page, reference, code = confirmation(first_click, send(first_click, answers, hidden=hidden))
    _page, again, code_again = confirmation(
        second_click, send(second_click, answers, hidden=hidden)
    )
    assert (again, code_again) == (reference, code)
    assert len(submissions(app)) == 1


def test_concurrent_replays_store_one_record(app: Flask) -> None:
    opener = app.test_client()
    hidden = open_form(opener)
    cookie = opener.get_cookie(cookie_name(app))
    assert cookie is not None
    body = {**hidden, **valid_answers()}
    threads = 20
    barrier = threading.Barrier(threads)
    results: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def post() -> None:
        client = app.test_client()
        client.set_cookie(cookie_name(app), cookie.value)
        try:
            barrier.wait(timeout=10)
            response = client.post("/", data=body)
            results.append((response.status_code, response.headers.get("Location", "")))
        except BaseException as error:  # reported below, with the thread's failure
            errors.append(error)

    workers = [threading.Thread(target=post) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors, errors
    assert len(results) == threads
    assert {status for status, _location in results} == {303}
    assert len({location for _status, location in results}) == 1
    rows = submissions(app)
    assert len(rows) == 1
    assert results[0][1].startswith(f"/confirmation/{rows[0].reference}")
    assert [e.action for e in audit_rows(app)] == ["submission.received"]


# ---------------------------------------------------------------------------- honeypot


def test_honeypot_looks_accepted_but_stores_nothing(app: Flask, client: FlaskClient) -> None:
    clear_counters(app)
    bot = send(client, valid_answers("BOT", website="https://spam.example"))
    assert bot.status_code == 303
    assert re.fullmatch(r"/confirmation/[A-Z0-9-]{9}\?lang=en", bot.headers["Location"])
    bot_page, bot_reference, bot_code = confirmation(client, bot)
    assert GROUPED.fullmatch(bot_code)
    assert submissions(app) == [] and audit_rows(app) == []
    assert honeypot_count(app) == 1

    # Nothing on the page tells a bot it was caught: it is a real confirmation's twin.
    person = app.test_client()
    real_page, real_reference, real_code = confirmation(person, send(person, valid_answers()))

    def shape(page: str, reference: str, code: str) -> str:
        page = page.replace(reference, "REF").replace(code, "CODE")
        return re.sub(r"Signed on [^<]*\.", "Signed on DATE.", page)

    assert shape(bot_page, bot_reference, bot_code) == shape(real_page, real_reference, real_code)

    send(client, valid_answers("BOT2", website="x"))
    assert honeypot_count(app) == 2
    assert len(submissions(app)) == 1  # the person's, only


def test_honeypot_replay_looks_like_a_real_replay(sqlite_app: Flask) -> None:
    """A real form sent twice keeps its reference; a trapped one must too, or bots can tell."""
    client = sqlite_app.test_client()
    hidden = open_form(client)
    first = send(client, valid_answers(website="x"), hidden=hidden)
    again = send(client, valid_answers(website="x"), hidden=hidden)
    assert first.headers["Location"] == again.headers["Location"]
    other = send(client, valid_answers(website="x"))  # a newly loaded form: a new reference
    assert other.headers["Location"] != first.headers["Location"]


def test_honeypot_hits_counted_concurrently(app: Flask) -> None:
    """Bots come in bursts: the day's first hits race to create the counter row."""
    clear_counters(app)
    threads = 8
    barrier = threading.Barrier(threads)
    statuses: list[int] = []
    prepared = []
    for _ in range(threads):
        client = app.test_client()
        prepared.append((client, open_form(client)))

    def post(client: FlaskClient, hidden: dict[str, str]) -> None:
        barrier.wait(timeout=10)
        statuses.append(send(client, valid_answers(website="x"), hidden=hidden).status_code)

    workers = [threading.Thread(target=post, args=pair) for pair in prepared]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert statuses == [303] * threads
    assert honeypot_count(app) == threads
    assert submissions(app) == []


# ---------------------------------------------------------------------------- rate limits


def test_rate_limited_send_keeps_everything_typed(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Per day, not per minute: limits count in fixed windows, and a minute can end mid-test.
    app = make_app(SUBMIT_RATE_LIMIT="2 per day", WITHDRAW_RATE_LIMIT="2 per day")
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "198.51.100.23"
    hidden = open_form(client)
    answers = valid_answers(email="not-an-email")  # invalid: each send is a 422, nothing stored
    for _ in range(2):
        assert send(client, answers, hidden=hidden).status_code == 422
    limited = send(client, answers, hidden=hidden)
    assert limited.status_code == 429
    page = limited.get_data(as_text=True)
    assert "Please wait a minute, then send again." in page
    assert_kept(page, answers)
    assert hidden_fields(page)["form_token"] == hidden["form_token"]
    assert 'name="csrf_token" value="' in page
    # Reading is never limited; the embedded form shares the limit.
    assert client.get("/").status_code == 200
    assert client.get("/embed").status_code == 200
    embedded = send(client, answers, path="/embed")
    assert embedded.status_code == 429
    assert "Please wait a minute" in embedded.get_data(as_text=True)
    # Someone else, from another address, still gets through.
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "192.0.2.44"
    assert send(other, valid_answers()).status_code == 303
    assert len(submissions(app)) == 1

    # Withdrawal has its own limit, and its 429 keeps what was typed.
    typed = {"reference": "abcd-2345", "code": "WXYZ-2345-EFGH"}
    for _ in range(2):
        response = client.post("/withdraw", data={**hidden_fields(_page(client)), **typed})
        assert response.status_code == 422
    response = client.post("/withdraw", data={**hidden_fields(_page(client)), **typed})
    assert response.status_code == 429
    withdraw_page = response.get_data(as_text=True)
    assert 'value="abcd-2345"' in withdraw_page
    assert "Please wait a minute" in withdraw_page
    assert client.get("/withdraw").status_code == 200
    # The limit biting is logged; the address it bit is not (an IP address identifies).
    assert "exceeded" in caplog.text
    assert "198.51.100.23" not in caplog.text


def _page(client: FlaskClient, path: str = "/withdraw") -> str:
    return client.get(path).get_data(as_text=True)


# ---------------------------------------------------------------------------- CSRF


def _expired_token(app: Flask, client: FlaskClient) -> str:
    """A CSRF token for this session, signed two hours ago (the default limit is one)."""

    class TwoHoursAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 7200

    raw = session_of(app, client)["csrf_token"]
    serializer = URLSafeTimedSerializer(
        app.config["SECRET_KEY"], salt="wtf-csrf-token", signer=TwoHoursAgo
    )
    return serializer.dumps(raw)


def test_switching_language_is_never_rate_limited(make_app: AppFactory) -> None:
    """A switch re-renders what was typed and stores nothing: people on a shared address
    must not spend their sends on it."""
    app = make_app(SUBMIT_RATE_LIMIT="1 per day", WITHDRAW_RATE_LIMIT="1 per day")
    client = app.test_client()
    hidden = open_form(client)
    for language in ("es", "en", "es"):
        switched = client.post(
            f"/?lang={language}", data={**hidden, **valid_answers(), "switch_language": language}
        )
        assert switched.status_code == 200
        withdraw_switch = client.post(
            f"/withdraw?lang={language}",
            data={**hidden_fields(_page(client)), "switch_language": language},
        )
        assert withdraw_switch.status_code == 200
    assert send(client, valid_answers(), hidden=hidden).status_code == 303


def test_rate_limit_storage_outage_does_not_refuse_patients(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shared limit storage (e.g. Redis) going down must not turn every send into a 500."""
    from intake.extensions import limiter

    app = make_app()
    client = app.test_client()
    hidden = open_form(client)

    def down(*_args: Any, **_kwargs: Any) -> Any:
        raise ConnectionError("rate-limit storage unreachable")

    strategy = limiter.limiter  # what checks and counts each request against the storage
    for method in ("hit", "test", "get_window_stats"):
        monkeypatch.setattr(strategy, method, down)
    assert send(client, valid_answers(), hidden=hidden).status_code == 303
    assert len(submissions(app)) == 1


def test_confirmation_copy_survives_a_renamed_organization(make_app: AppFactory) -> None:
    """The organization's name is part of the signed text: the copy keeps the one signed."""
    before = make_app(ORGANIZATION_NAME="Alpha Cancer Center")
    client = before.test_client()
    location = send(client, valid_answers()).headers["Location"]
    after = make_app(ORGANIZATION_NAME="Beta Oncology")
    renamed = after.test_client()
    cookie = client.get_cookie(cookie_name(before))
    assert cookie is not None
    renamed.set_cookie(cookie.key, cookie.value)
    page = renamed.get(location).get_data(as_text=True)
    assert "sent to Alpha Cancer Center" in page
    [row] = submissions(after)
    with before.app_context():
        signed = consent.signed_text(
            row.consent_version, row.consent_language, "Alpha Cancer Center"
        )
    assert row.consent_text_sha256 == signed.sha256()


@pytest.mark.parametrize("problem", ["missing", "wrong", "expired"])
def test_refused_csrf_token_keeps_the_form(app: Flask, client: FlaskClient, problem: str) -> None:
    hidden = open_form(client)
    answers = valid_answers()
    if problem == "missing":
        del hidden["csrf_token"]
    elif problem == "wrong":
        hidden["csrf_token"] = hidden["csrf_token"][:-4] + "AAAA"
    else:
        hidden["csrf_token"] = _expired_token(app, client)
    refused = send(client, answers, hidden=hidden)
    assert refused.status_code == 422
    page = refused.get_data(as_text=True)
    assert "For your security, this page timed out." in page
    assert_kept(page, answers)
    fresh = hidden_fields(page)
    assert fresh["csrf_token"] and fresh["csrf_token"] != hidden.get("csrf_token")
    assert fresh["form_token"] == hidden["form_token"]
    assert submissions(app) == []
    assert send(client, answers, hidden=fresh).status_code == 303
    assert len(submissions(app)) == 1


@pytest.mark.parametrize("problem", ["missing", "wrong", "expired"])
def test_refused_csrf_token_on_withdraw_keeps_the_codes(
    app: Flask, client: FlaskClient, problem: str
) -> None:
    client.get("/withdraw")
    typed = {"reference": "ABCD-2345", "code": "WXYZ-2345-EFGH"}
    tokens = {"missing": {}, "wrong": {"csrf_token": "A" * 40}}
    tokens["expired"] = {"csrf_token": _expired_token(app, client)}
    response = client.post("/withdraw", data={**tokens[problem], **typed})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'value="ABCD-2345"' in page and 'value="WXYZ-2345-EFGH"' in page
    assert "this page timed out" in page
    fresh = hidden_fields(page)["csrf_token"]
    again = client.post("/withdraw", data={"csrf_token": fresh, **typed})
    assert again.status_code == 422  # the codes match nothing, but the token was accepted
    assert "this page timed out" not in again.get_data(as_text=True)
    assert "We could not match" in again.get_data(as_text=True)


# ---------------------------------------------------------------------------- source attribution


def _source_stored(app: Flask, client: FlaskClient, path: str = "/", **headers: str) -> Any:
    hidden = open_form(client, path, **headers)
    response = send(client, valid_answers(), hidden=hidden)
    assert response.status_code == 303
    return submissions(app)[-1].source


def test_source_slug_is_stored(app: Flask, client: FlaskClient) -> None:
    assert _source_stored(app, client, "/?source=spring-article") == "spring-article"


def test_referrer_host_and_path_are_stored_without_query(app: Flask, client: FlaskClient) -> None:
    referrer = "https://news.example.org/health/lung?utm=x&email=a@b.c#frag"
    assert _source_stored(app, client, Referer=referrer) == "news.example.org/health/lung"


def test_a_long_query_is_dropped_not_the_whole_referrer(sqlite_app: Flask) -> None:
    referrer = "https://news.example.org/health/lung?utm_campaign=" + "x" * 400
    stored = _source_stored(sqlite_app, sqlite_app.test_client(), Referer=referrer)
    assert stored == "news.example.org/health/lung"


def test_our_own_pages_are_not_a_source(app: Flask, client: FlaskClient) -> None:
    assert _source_stored(app, client, Referer="http://localhost/withdraw?lang=es") is None


HOSTILE_SOURCES = (
    "x" * 10_000,
    "spring\x00article",
    "spring\narticle",
    "javascript:alert(1)",
    "spring article",
    "<script>alert(1)</script>",
    "a@b.c",
    "news.example.org/?email=a@b.c",
    "https://news.example.org/p?email=a@b.c#x=1",
    "%3Cscript%3E",
    "\u202espring",
    "😀",
    "news.example.org/a b/c=d",
    "https://user:secret@news.example.org/x",
)


def _assert_safe_source(value: str | None) -> None:
    if value is None:
        return
    assert len(value) <= 300
    assert not set(value) & set("?@=#&<>\"' %:"), value
    assert re.fullmatch(r"[a-z0-9._~/-]+", value), value
    assert "secret" not in value and "user" not in value


def _send_with_source(client: FlaskClient, hostile: str) -> None:
    # As ?source= on the address...
    assert client.get("/", query_string={"source": hostile}).status_code == 200
    # ...as the Referer header (only printable ASCII can be one)...
    if hostile.isprintable() and hostile.isascii():
        assert client.get("/", headers={"Referer": hostile}).status_code == 200
    # ...and as a tampered hidden field, which is what gets stored.
    hidden = open_form(client)
    response = send(client, valid_answers(), hidden={**hidden, "source": hostile})
    assert response.status_code == 303


def test_hostile_source_values_are_dropped_or_sanitized(app: Flask, client: FlaskClient) -> None:
    for hostile in HOSTILE_SOURCES:
        _send_with_source(client, hostile)
    rows = submissions(app)
    assert len(rows) == len(HOSTILE_SOURCES)
    for row in rows:
        _assert_safe_source(row.source)


@pytest.mark.parametrize("hostile", ["[", "https://[news.example.org/"])
def test_source_that_is_not_a_valid_url_is_dropped(sqlite_app: Flask, hostile: str) -> None:
    client = sqlite_app.test_client()
    _send_with_source(client, hostile)
    assert submissions(sqlite_app)[0].source is None


# ---------------------------------------------------------------------------- languages


def test_accept_language_chooses_spanish_and_lang_overrides(
    app: Flask, client: FlaskClient
) -> None:
    spanish = client.get("/", headers={"Accept-Language": "es-MX,es;q=0.9"})
    page = spanish.get_data(as_text=True)
    assert '<html lang="es">' in page
    assert str(escape(signed_text(app, "es").title)) in page
    assert hidden_fields(page)["consent_language"] == "es"
    english = client.get("/?lang=en", headers={"Accept-Language": "es"})
    page = english.get_data(as_text=True)
    assert '<html lang="en">' in page
    assert str(escape(signed_text(app, "en").title)) in page


def test_language_switch_keeps_input_and_the_spanish_consent_is_stored(
    app: Flask, client: FlaskClient
) -> None:
    form = client.get("/").get_data(as_text=True)
    assert 'name="switch_language" value="es" formaction="/?lang=es"' in form
    answers = valid_answers(full_name="Zoë O’Brien-Núñez", signature="Zoë O’Brien-Núñez")
    switched = client.post(
        "/?lang=es", data={**hidden_fields(form), **answers, "switch_language": "es"}
    )
    assert switched.status_code == 200
    page = switched.get_data(as_text=True)
    assert '<html lang="es">' in page
    assert str(escape(signed_text(app, "es").title)) in page
    assert_kept(page, answers)
    assert submissions(app) == []
    hidden = hidden_fields(page)
    assert (hidden["consent_language"], hidden["form_token"]) == (
        "es",
        hidden_fields(form)["form_token"],
    )
    assert 'action="/?lang=es"' in page

    sent = client.post("/?lang=es", data={**hidden, **answers})
    assert sent.status_code == 303
    assert sent.headers["Location"].endswith("?lang=es")
    [row] = submissions(app)
    assert row.consent_language == "es"
    assert row.consent_text_sha256 == signed_text(app, "es").sha256()
    confirmation_page, _reference, _code = confirmation(client, sent)
    assert '<html lang="es">' in confirmation_page
    assert "Gracias. Recibimos sus datos." in confirmation_page
    for paragraph in signed_text(app, "es").paragraphs:
        assert str(escape(paragraph)) in confirmation_page


def test_the_text_shown_is_the_text_stored(app: Flask, client: FlaskClient) -> None:
    """An English page sent to a Spanish address still records the English text it showed."""
    hidden = open_form(client, "/?lang=en")
    response = client.post("/?lang=es", data={**hidden, **valid_answers()})
    assert response.status_code == 303
    [row] = submissions(app)
    assert row.consent_language == "en"
    assert row.consent_text_sha256 == signed_text(app, "en").sha256()


# ---------------------------------------------------------------------------- failures keep input


def _assert_unavailable_keeps_input(app: Flask, client: FlaskClient) -> None:
    answers = valid_answers()
    response = send(client, answers)
    assert response.status_code == 503
    page = response.get_data(as_text=True)
    assert "We could not save your answers just now." in page
    assert_kept(page, answers)
    assert submissions(app) == []


def test_no_usable_key_answers_503_with_the_form(make_app: AppFactory, tmp_path: Path) -> None:
    empty = tmp_path / "no-keys"
    empty.mkdir()
    app = make_app(KEYS_DIR=str(empty))
    client = app.test_client()
    _assert_unavailable_keeps_input(app, client)
    assert audit_rows(app) == []
    page = client.get("/withdraw").get_data(as_text=True)
    typed = {"reference": "abcd 2345", "code": "WXYZ-2345-EFGH"}
    response = client.post("/withdraw", data={**hidden_fields(page), **typed})
    assert response.status_code == 503
    assert 'value="abcd 2345"' in response.get_data(as_text=True)
    assert "Please try sending again in a few minutes." in response.get_data(as_text=True)


def test_database_down_answers_503_with_the_form(make_sqlite_app: AppFactory) -> None:
    app = make_sqlite_app(DATABASE_URL="postgresql+psycopg://intake@127.0.0.1:9/intake")
    client = app.test_client()
    answers = valid_answers()
    response = send(client, answers)
    assert response.status_code == 503
    assert_kept(response.get_data(as_text=True), answers)


def test_retired_key_answers_503_with_the_form(
    make_app: AppFactory, keys_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from intake.keys import current_keyring, retire
    from intake.sealing import generate_key

    app = make_app()  # still holds only the old key, as a host not yet given the new one
    with app.app_context():
        old_key = current_keyring().sealing_key_id
    admin_keys = tmp_path / "admin-keys"
    shutil.copytree(keys_dir, admin_keys)
    generate_key(admin_keys)
    admin = make_app(KEYS_DIR=str(admin_keys))
    with admin.app_context():
        retire(db.session(), current_keyring(), old_key, actor="user:1")
        db.session.commit()
    _assert_unavailable_keeps_input(app, app.test_client())


# ---------------------------------------------------------------------------- no PHI anywhere


MARKERS = {
    "full_name": "Qzvnamemark Oyelastmark",
    "email": "qzv.emailmark@example.org",
    "phone": "(617) 253-7319",
    "postal_code": "94117-3852",
    "cancer_other": "Qzvothermark growth",
    "representative_authority": "Qzvauthmark court order",
    "signature": "Qzvsignmark Oyesigner",
}
BIRTHDAY = date(1931, 2, 17)
BIRTHDAY_2 = date(1944, 11, 23)


def _needles(markers: dict[str, str], birthday: date) -> list[str]:
    """Each marker in every shape a leak might take."""
    needles: list[str] = []
    for value in markers.values():
        needles += [value, value.lower(), value.upper()]
        needles += [word for word in re.split(r"[ @.()-]+", value) if len(word) >= 8]
    digits = "".join(ch for ch in markers["phone"] if ch.isdigit())
    needles += [digits, "253-7319", "2537319", "+1" + digits]
    needles += [markers["postal_code"].replace("-", "")]
    needles += [
        birthday.isoformat(),
        birthday.strftime("%d/%m/%Y"),
        birthday.strftime("%m/%d/%Y"),
        birthday.strftime("%Y%m%d"),
        f"{birthday.year}-{birthday.month}-{birthday.day}",
    ]
    return sorted(set(needles))


def _representative_answers(markers: dict[str, str], birthday: date) -> dict[str, str]:
    return valid_answers(
        filler="representative",
        representative_authority=markers["representative_authority"],
        cancer_type="other_not_sure",
        cancer_other=markers["cancer_other"],
        birth_day=str(birthday.day),
        birth_month=str(birthday.month),
        birth_year=str(birthday.year),
        full_name=markers["full_name"],
        email=markers["email"],
        phone=markers["phone"],
        postal_code=markers["postal_code"],
        contact_method="phone",
        signature=markers["signature"],
    )


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG (SQLAlchemy's statements included), captured."""
    caplog.set_level(logging.DEBUG)
    return caplog


def test_markers_appear_nowhere_but_in_the_sealed_payload(
    make_app: AppFactory,
    database: Database,
    everything_logged: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = make_app(LOG_LEVEL="DEBUG")
    for name in ("intake", "sqlalchemy.engine", "werkzeug", "flask-limiter"):
        everything_logged.set_level(logging.DEBUG, logger=name)
    client = app.test_client()
    other = {key: value.replace("Qzv", "Wkp") for key, value in MARKERS.items()}
    other.update(phone="(312) 867-5309", postal_code="60614-2210")
    needles = _needles(MARKERS, BIRTHDAY) + _needles(other, BIRTHDAY_2)

    urls: list[str] = []
    headers: list[str] = []
    sessions: list[str] = []

    def note(browser: FlaskClient, response: TestResponse, url: str) -> TestResponse:
        urls.extend((url, response.headers.get("Location", "")))
        headers.extend(f"{name}: {value}" for name, value in response.headers.items())
        if browser.get_cookie(cookie_name(app)) is not None:
            sessions.append(repr(session_of(app, browser)))
        return response

    # An invalid send first: markers everywhere, one field wrong.
    invalid = _representative_answers(MARKERS, BIRTHDAY) | {"agree": ""}
    assert note(client, send(client, invalid), "/").status_code == 422

    # A valid send and its confirmation.
    response = note(client, send(client, _representative_answers(MARKERS, BIRTHDAY)), "/")
    location = response.headers["Location"]
    assert note(client, client.get(location), location).status_code == 200

    # A second person sends and withdraws; a bot sends the markers into the honeypot.
    second = app.test_client()
    other_response = note(second, send(second, _representative_answers(other, BIRTHDAY_2)), "/")
    _page, reference, code = confirmation(second, other_response)
    withdraw_page = second.get("/withdraw").get_data(as_text=True)
    withdrawn = second.post(
        "/withdraw", data={**hidden_fields(withdraw_page), "reference": reference, "code": code}
    )
    withdrawn.close()
    assert note(second, withdrawn, "/withdraw").status_code == 303
    bot = app.test_client()
    trapped = send(bot, _representative_answers(MARKERS, BIRTHDAY) | {"website": "x"})
    assert note(bot, trapped, "/").status_code == 303

    rows = submissions(app)
    assert len(rows) == 2 and rows[1].shredded_at is not None
    assert rows[0].signer_role == "legal_representative"

    raw = database.raw_bytes()
    assert b"other_not_sure" in raw  # the dump holds the plaintext facts: it is a real dump
    events = audit_rows(app)
    assert [e.action for e in events] == [
        "submission.received",
        "submission.received",
        "submission.shredded",
    ]
    audit_text = " ".join(f"{e.actor} {e.action} {e.target} {e.details}" for e in events)
    logged = "\n".join(
        f"{record.name} {record.getMessage()} {record.exc_text or ''}"
        for record in everything_logged.records
    )
    assert "INSERT INTO submissions" in logged  # SQLAlchemy's statements were captured
    captured = capsys.readouterr()
    places = {
        "raw storage": raw.decode("latin-1"),
        "audit trail": audit_text,
        "logs": logged,
        "stdout/stderr": captured.out + captured.err,
        "URLs": " ".join(urls),
        "response headers": " ".join(headers),
        "session cookie": " ".join(sessions),
    }
    for where, haystack in places.items():
        for needle in needles:
            assert needle not in haystack, f"{needle!r} found in {where}"
            if where == "raw storage":
                assert needle.encode("utf-8").decode("latin-1") not in haystack
