"""The audit trail page: who may see it, filters, keyset pages, the chain's state, read-only."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import DatabaseError

from intake import audit
from intake.extensions import db
from intake.models import AuditEvent
from tests.factories import StaffAccount, login, make_user

AUDIT = "/coordinator/audit"
ROW_IDS = re.compile(r'<th scope="row">(\d+)</th>')


def write_events(
    app: Flask, count: int, *, action: str = "test.event", actor: str = "cli:test"
) -> None:
    with app.app_context():
        for number in range(count):
            audit.record(db.session(), actor=actor, action=action, target=f"T{number}")
        db.session.commit()


def signed_in(app: Flask, role: str = "auditor") -> tuple[FlaskClient, StaffAccount]:
    client, account = app.test_client(), make_user(app, role=role)
    login(client, account)
    return client, account


def get(client: FlaskClient, query: str = "", status: int = 200) -> str:
    response = client.get(f"{AUDIT}{query}")
    assert response.status_code == status, response.status_code
    return response.get_data(as_text=True)


def link(html: str, label: str) -> str | None:
    match = re.search(rf'<a href="([^"]+)">{label}</a>', html)
    return match.group(1).replace("&amp;", "&") if match else None


def head_hash(app: Flask) -> str:
    with app.app_context():
        value = db.session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()))
        assert value is not None
        return value


# ---------------------------------------------------------------------------- access


def test_anonymous_visitors_are_sent_to_sign_in(client: FlaskClient) -> None:
    response = client.get(AUDIT)
    assert response.status_code == 303
    assert response.headers["Location"] == "/coordinator/login?next=/coordinator/audit"


@pytest.mark.parametrize(
    ("role", "status"), [("admin", 200), ("auditor", 200), ("coordinator", 403)]
)
def test_only_admins_and_auditors_see_the_trail(app: Flask, role: str, status: int) -> None:
    write_events(app, 1)
    client, _account = signed_in(app, role)
    body = get(client, "", status)
    nav = client.get("/coordinator/charts").get_data(as_text=True)  # any staff page
    assert ('href="/coordinator/audit"' in nav) == (status == 200)
    if status == 403:
        assert "<td>T0" not in body and "test.event" not in body and "@" not in body


def test_the_trail_cannot_be_changed_through_the_app(app: Flask) -> None:
    rules = [rule for rule in app.url_map.iter_rules() if rule.rule.startswith(AUDIT)]
    assert rules and all(rule.methods <= {"GET", "HEAD", "OPTIONS"} for rule in rules)  # type: ignore[operator]
    write_events(app, 2)
    client, _account = signed_in(app, "admin")
    for method in ("post", "put", "patch", "delete"):
        assert getattr(client, method)(AUDIT).status_code == 405, method
    with app.app_context():
        for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
            with pytest.raises(DatabaseError, match="append-only"), db.engine.begin() as connection:
                connection.execute(text(statement))
    assert 'data-state="intact"' in get(client)


# ---------------------------------------------------------------------------- the list


def test_newest_first_with_staff_emails_and_details(app: Flask) -> None:
    write_events(app, 3)
    client, account = signed_in(app)
    html = get(client)
    ids = [int(value) for value in ROW_IDS.findall(html)]
    assert ids == sorted(ids, reverse=True) and len(ids) >= 5
    assert f"({account.email})" in html  # the auditor's own sign-in, named
    assert "<code>{}</code>" in html or "<code>{&#34;" in html


def test_filters_by_actor_and_action(app: Flask) -> None:
    write_events(app, 3, actor="cli:alice", action="test.alpha")
    write_events(app, 2, actor="cli:bob", action="test.beta")
    client, _account = signed_in(app)
    by_actor = get(client, "?actor=cli:bob")
    assert len(ROW_IDS.findall(by_actor)) == 2 and "cli:alice" not in by_actor.split("<table", 1)[1]
    by_action = get(client, "?action=test.alpha")
    assert len(ROW_IDS.findall(by_action)) == 3
    assert '<option value="test.alpha" selected>' in by_action
    assert len(ROW_IDS.findall(get(client, "?actor=cli:bob&action=test.alpha"))) == 0


def test_filters_by_date_range(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    for day in (1, 2, 3):
        moment = datetime(2026, 3, day, 23, 59, 59, tzinfo=UTC)
        monkeypatch.setattr(audit, "utcnow", lambda moment=moment: moment)
        write_events(app, 1, action=f"test.day{day}")
    monkeypatch.undo()
    client, _account = signed_in(app)
    html = get(client, "?from=2026-03-02&to=2026-03-02")  # the end day is included, to 23:59:59
    assert ROW_IDS.findall(html) == ["2"]
    assert ROW_IDS.findall(get(client, "?from=2026-03-02&action=test.day3")) == ["3"]
    assert ROW_IDS.findall(get(client, "?to=2026-03-01")) == ["1"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?actor=someone@example.org", "actor"),
        ("?actor=two%20words", "actor"),
        ("?action=DROP%20TABLE", "action"),
        ("?from=03/02/2026", "from"),
        ("?from=2026-02-30", "from"),
        ("?from=2026-03-02&to=2026-03-01", "to"),
    ],
)
def test_bad_filters_are_named_not_run(app: Flask, query: str, field: str) -> None:
    write_events(app, 1)
    client, _account = signed_in(app)
    html = get(client, query, 400)
    assert f'<a href="#{field}">' in html and f'id="{field}-error"' in html
    assert ROW_IDS.findall(html) == [] and "<td>T0" not in html  # no results for it
    assert "someone@example.org" not in html.split(">Filter</button>", 1)[1]


def test_keyset_pages_cover_every_row_once(app: Flask) -> None:
    write_events(app, 120)
    client, _account = signed_in(app)
    html, seen, pages = get(client, "?action=test.event"), [], []
    while True:
        ids = [int(value) for value in ROW_IDS.findall(html)]
        pages.append(ids)
        seen += ids
        older = link(html, "Older events")
        if older is None:
            break
        html = get(client, older.removeprefix(AUDIT))
    assert [len(ids) for ids in pages] == [50, 50, 20]
    assert seen == list(range(120, 0, -1))
    newer = link(html, "Newer events")
    assert newer is not None and "action=test.event" in newer
    back = [int(value) for value in ROW_IDS.findall(get(client, newer.removeprefix(AUDIT)))]
    assert back == pages[1]
    assert link(get(client, "?action=test.event"), "Newer events") is None


# ---------------------------------------------------------------------------- chain state


def test_intact_chain_shows_its_head_and_when_it_was_checked(app: Flask) -> None:
    write_events(app, 4)
    client, _account = signed_in(app)
    html = get(client)
    assert 'data-state="intact"' in html
    found = re.search(r'<code class="staff-secret" id="chain-head">([0-9a-f]{64})</code>', html)
    assert found and found.group(1) == head_hash(app)
    checked = re.search(r"Checked (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", html)
    assert checked
    moment = datetime.strptime(checked.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1)


def _as_schema_owner(app: Flask, change: Callable[[Connection], None]) -> None:
    """Tamper as the database owner could: with the append-only triggers out of the way."""
    with app.app_context(), db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            connection.execute(text("DROP TRIGGER audit_events_no_update"))
        change(connection)
        if connection.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


def test_a_tampered_row_shows_the_chain_broken(app: Flask) -> None:
    write_events(app, 5)
    client, _account = signed_in(app)
    _as_schema_owner(
        app, lambda c: c.execute(text("UPDATE audit_events SET target = 'T99' WHERE id = 3"))
    )
    html = get(client)
    assert 'data-state="broken"' in html and 'data-state="intact"' not in html
    assert "Broken at row 3." in html and "row edited" in html
    shown = link(html, "Show the events from row 3")
    assert shown is not None
    assert ROW_IDS.findall(get(client, shown.removeprefix(AUDIT)))[0] == "3"
