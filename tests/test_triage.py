"""Triage: the list and its filters, keyset pages, search, the audited detail page, workflow,
assignment, sealed notes, audit completeness and the role matrix, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, func, select, text, update

from intake import triage
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import AuditEvent, Note, Submission, User
from intake.sealing import Keyring
from intake.submissions import shred_submission
from tests.conftest import Database
from tests.factories import (
    StaffAccount,
    csrf_token,
    login,
    make_submission,
    make_user,
    sql_statements,
)

ROW = re.compile(r'<a href="/coordinator/submissions/([A-Z0-9-]+)">')


@pytest.fixture
def coordinator(app: Flask) -> StaffAccount:
    return make_user(app, role="coordinator")


@pytest.fixture
def staff_client(app: Flask, coordinator: StaffAccount) -> FlaskClient:
    client = app.test_client()
    login(client, coordinator)
    return client


def add(app: Flask, marker: str, **facts: Any) -> str:
    """A committed submission made through the real service; returns its reference."""
    with app.app_context():
        submission = make_submission(db.session(), current_keyring(), marker, **facts)
        db.session.commit()
        return submission.reference


def set_columns(app: Flask, reference: str, **values: Any) -> None:
    with app.app_context():
        db.session.execute(
            update(Submission).where(Submission.reference == reference).values(**values)
        )
        db.session.commit()


def audit_since(app: Flask, after: int) -> list[AuditEvent]:
    with app.app_context():
        query = select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id)
        rows = list(db.session.scalars(query))
        db.session.expunge_all()
        return rows


def last_audit_id(app: Flask) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.max(AuditEvent.id))) or 0)


def listed(client: FlaskClient, query: str = "") -> list[str]:
    response = client.get("/coordinator/" + query)
    assert response.status_code == 200, response.status_code
    return ROW.findall(response.get_data(as_text=True))


def row_version(app: Flask, reference: str) -> int:
    with app.app_context():
        query = select(Submission.row_version).where(Submission.reference == reference)
        return int(db.session.scalar(query) or 0)


def post(client: FlaskClient, path: str, **data: str) -> Any:
    return client.post(path, data={"csrf_token": csrf_token(client, "/coordinator/"), **data})


def status_of(app: Flask, reference: str) -> str:
    with app.app_context():
        query = select(Submission.status).where(Submission.reference == reference)
        return str(db.session.scalar(query))


# ---------------------------------------------------------------------------- the list


def test_list_shows_plaintext_columns_and_opens_nothing(
    app: Flask, staff_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = add(app, "LISTED", cancer_type="breast", source="lung-guide")
    opened: list[str] = []
    original = Keyring.open

    def counting(self: Keyring, *args: Any, **kwargs: Any) -> bytes:
        opened.append("open")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Keyring, "open", counting)
    response = staff_client.get("/coordinator/")
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and opened == []
    assert response.headers["Cache-Control"] == "no-store"
    assert reference in body and "lung-guide" in body and "Unassigned" in body
    assert "NAME-LISTED" not in body and "email-listed" not in body


def test_filters_narrow_the_list(app: Flask, staff_client: FlaskClient) -> None:
    other = make_user(app, role="admin")
    old = add(app, "OLD", cancer_type="lung", age_band="65-79", source="a")
    new = add(app, "NEW", cancer_type="breast", age_band="18-39", source="b")
    mine = add(app, "MINE", cancer_type="breast", age_band="18-39", source="b")
    set_columns(app, old, received_at=datetime(2026, 1, 10, 12, tzinfo=UTC))
    set_columns(app, mine, assignee_id=other.id, status="in_review")
    cases = {
        "?status=in_review": [mine],
        "?status=new": [new, old],
        "?cancer_type=lung": [old],
        "?age_band=18-39": [mine, new],
        "?source=a": [old],
        f"?assignee={other.id}": [mine],
        "?assignee=none": [new, old],
        "?received_to=2026-01-10": [old],
        "?received_from=2026-01-11": [mine, new],
        f"?reference={mine.lower()}": [mine],
        "?cancer_type=breast&assignee=none": [new],
    }
    for query, expected in cases.items():
        assert listed(staff_client, query) == expected, query


def test_a_bad_filter_value_is_named_and_ignored(staff_client: FlaskClient) -> None:
    response = staff_client.get("/coordinator/?status=enrolled&received_from=yesterday")
    body = response.get_data(as_text=True)
    assert response.status_code == 422
    assert '<a href="#status">Choose a status from the list</a>' in body
    assert '<a href="#received_from">' in body


def test_keyset_pages_cover_equal_timestamps_exactly_once(
    app: Flask, staff_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    same = datetime(2026, 11, 1, 9, tzinfo=UTC)
    references = [add(app, f"P{number}") for number in range(7)]
    for reference in references[:5]:
        set_columns(app, reference, received_at=same)
    monkeypatch.setattr(triage, "PAGE_SIZE", 3)
    seen: list[str] = []
    query = ""
    for _page in range(5):
        body = staff_client.get("/coordinator/" + query).get_data(as_text=True)
        seen += ROW.findall(body)
        match = re.search(r'href="(/coordinator/\?after=[^"]+)" rel="next"', body)
        if not match:
            break
        query = "?" + match.group(1).split("?", 1)[1].replace("&amp;", "&")
    assert sorted(seen) == sorted(references) and len(seen) == 7
    with app.app_context():
        ordered = [
            row.reference
            for row in db.session.scalars(
                select(Submission).order_by(Submission.received_at.desc(), Submission.id.desc())
            )
        ]
    assert seen == ordered


def test_cursor_is_opaque_and_a_forged_one_is_harmless(staff_client: FlaskClient) -> None:
    cursor = triage.encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), triage.uuid7())
    assert "2026" not in cursor and triage.decode_cursor(cursor) is not None
    assert triage.decode_cursor("not-a-cursor") is None
    assert staff_client.get("/coordinator/?after=%%%garbage").status_code == 200


def test_counts_per_status_follow_the_other_filters(app: Flask) -> None:
    for marker, status in (("A", "new"), ("B", "new"), ("C", "contacted")):
        set_columns(app, add(app, marker, cancer_type="lung"), status=status)
    add(app, "D", cancer_type="breast")
    with app.app_context():
        counts = triage.status_counts(
            db.session(), triage.Filters(status="contacted", cancer_type="lung")
        )
    assert counts["new"] == triage.StatusCount(2) and counts["contacted"] == triage.StatusCount(1)
    assert counts["referred"] == triage.StatusCount(0)
    assert "enrolled" not in counts and "participating" not in counts


def test_counts_are_exact_up_to_the_cap_then_capped(app: Flask) -> None:
    for marker in ("A", "B", "C"):
        add(app, marker, cancer_type="lung")  # new
    set_columns(app, add(app, "D", cancer_type="lung"), status="contacted")
    set_columns(app, add(app, "E", cancer_type="breast"), status="contacted")
    with app.app_context():
        session = db.session()
        at_cap = triage.status_counts(session, triage.Filters(), cap=3)
        lung = triage.status_counts(session, triage.Filters(cancer_type="lung"), cap=2)
        breast = triage.status_counts(session, triage.Filters(cancer_type="breast"), cap=2)
    assert at_cap["new"] == triage.StatusCount(3) and at_cap["contacted"] == triage.StatusCount(2)
    assert lung["new"] == triage.StatusCount(2, more=True)
    assert lung["contacted"] == triage.StatusCount(1) and breast["new"] == triage.StatusCount(0)
    assert breast["contacted"] == triage.StatusCount(1)


def by_status(client: FlaskClient, query: str = "") -> str:
    body = client.get("/coordinator/" + query).get_data(as_text=True)
    start = body.index('id="by-status"')
    return body[start : body.index("</ul>", start)]


def test_the_page_labels_a_capped_count_for_everyone(
    app: Flask, staff_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for marker in ("A", "B", "C"):
        add(app, marker, source="radio")
    set_columns(app, add(app, "D", source="poster"), status="in_review")
    monkeypatch.setattr(triage, "STATUS_COUNT_CAP", 2)
    counts = by_status(staff_client)
    assert '>New</a>: <span aria-hidden="true">2+</span>' in counts
    assert '<span class="visually-hidden">more than 2</span>' in counts
    assert ">In review</a>: 1</li>" in counts and ">Contacted</a>: 0</li>" in counts
    counts = by_status(staff_client, "?source=poster")
    assert ">New</a>: 0</li>" in counts and ">In review</a>: 1</li>" in counts
    assert "more than" not in counts and "+</span>" not in counts
    monkeypatch.setattr(triage, "STATUS_COUNT_CAP", 10_000)
    counts = by_status(staff_client)
    assert ">New</a>: 3</li>" in counts and "more than" not in counts


def test_counts_are_one_statement_whatever_the_filters(app: Flask) -> None:
    add(app, "A")
    with app.app_context(), sql_statements(db.engine) as statements:
        triage.status_counts(
            db.session(), triage.Filters(cancer_type="lung", assignee="none", age_band="80+")
        )
    queries = [s.sql for s in statements if s.sql.lstrip().upper().startswith("SELECT")]
    assert len(queries) == 1 and queries[0].count("LIMIT") == len(triage.STATUSES)


def test_one_page_costs_the_same_queries_whatever_its_size(
    app: Flask, staff_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(6):
        add(app, f"Q{number}")
    with app.app_context():
        engine = db.engine
    sizes = {}
    with sql_statements(engine) as statements:
        for size in (2, 5):
            monkeypatch.setattr(triage, "PAGE_SIZE", size)
            statements.clear()
            staff_client.get("/coordinator/")
            sizes[size] = len(statements)
    assert sizes[2] == sizes[5]


# ---------------------------------------------------------------------------- search


def test_email_search_is_post_only_audited_and_never_in_a_url(
    app: Flask, staff_client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    first = add(app, "FIND")
    second = add(app, "FIND")
    add(app, "OTHER")
    before = last_audit_id(app)
    assert staff_client.get("/coordinator/search?email=x").status_code in {404, 405}
    response = post(staff_client, "/coordinator/search", email=" EMAIL-find@Example.org ")
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "Location" not in response.headers
    assert set(ROW.findall(body)) == {first, second}
    assert "email-find@example.org" not in body.lower()
    rows = audit_since(app, before)
    assert [(r.action, r.target, r.details) for r in rows] == [
        ("submission.searched", None, '{"matches":2}')
    ]
    assert "find" not in caplog.text.lower()
    empty = post(staff_client, "/coordinator/search", email="")
    assert empty.status_code == 422 and len(audit_since(app, before)) == 1


# ---------------------------------------------------------------------------- detail


def test_detail_commits_its_audit_row_before_rendering(
    app: Flask, database: Database, staff_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = add(app, "AUDITED")
    from intake.coordinator import triage as views

    seen_committed: list[int] = []
    original = views.render_template

    def checking(template: str, **context: Any) -> str:
        engine = create_engine(database.url)  # another connection: sees committed rows only
        with engine.connect() as connection:
            seen_committed.append(
                connection.execute(
                    text(
                        "SELECT count(*) FROM audit_events "
                        "WHERE action = 'submission.opened' AND target = :t"
                    ),
                    {"t": reference},
                ).scalar_one()
            )
        engine.dispose()
        return original(template, **context)

    monkeypatch.setattr(views, "render_template", checking)
    response = staff_client.get(f"/coordinator/submissions/{reference}")
    assert response.status_code == 200
    assert seen_committed == [1]
    assert response.headers["Cache-Control"] == "no-store"


def test_detail_shows_contact_consent_duplicates_and_history(
    app: Flask, staff_client: FlaskClient, coordinator: StaffAccount
) -> None:
    reference = add(app, "SHOWN", consent_version="2026-11-v1", consent_language="en")
    twin = add(app, "SHOWN")
    add(app, "STRANGER")
    body = staff_client.get(f"/coordinator/submissions/{reference}").get_data(as_text=True)
    for shown in ("NAME-SHOWN", "email-shown@example.org", "+1 555 SHOWN", "ZIP-SHOWN"):
        assert shown in body
    assert "2026-11-v1" in body and "Signed at (UTC)" in body and "Expires (UTC)" in body
    consent_link = "/coordinator/consent/2026-11-v1/en"
    assert consent_link in body
    consent_page = staff_client.get(consent_link)
    assert consent_page.status_code == 200 and "medical records" in consent_page.get_data(
        as_text=True
    )
    assert staff_client.get("/coordinator/consent/1999-01-v0/en").status_code == 404
    duplicates = body.split("Possible duplicates", 1)[1].split("History", 1)[0]
    assert ROW.findall(duplicates) == [twin]
    history = body.split("<h2>History</h2>", 1)[1]
    assert "submission.received" in history and "submission.opened" in history
    assert coordinator.email in history


def test_withdrawn_submission_shows_a_tombstone_without_opening(
    app: Flask, staff_client: FlaskClient
) -> None:
    reference = add(app, "GONE")
    with app.app_context():
        submission = triage.find_by_reference(db.session(), reference)
        assert submission is not None
        shred_submission(db.session(), submission, actor="patient", reason="withdrawn_by_patient")
        db.session.commit()
    before = last_audit_id(app)
    body = staff_client.get(f"/coordinator/submissions/{reference}").get_data(as_text=True)
    assert "crypto-shredded" in body and "NAME-GONE" not in body
    assert audit_since(app, before) == []
    refused = post(staff_client, f"/coordinator/submissions/{reference}/notes", note="hello")
    assert refused.status_code == 409


# ---------------------------------------------------------------------------- workflow

PAIRS = [(old, new) for old in triage.STATUSES for new in triage.STATUSES]


def test_transition_table_is_enforced(app: Flask) -> None:
    reference = add(app, "FLOW")
    with app.app_context():
        session = db.session()
        submission = triage.find_by_reference(session, reference)
        assert submission is not None
        for old, new in PAIRS:
            submission.status = old
            session.commit()
            try:
                triage.change_status(
                    session, submission, new, expected_version=submission.row_version, actor="t"
                )
            except triage.IllegalTransition:
                session.rollback()
                assert new not in triage.TRANSITIONS[old], (old, new)
                continue
            session.commit()
            assert new in triage.TRANSITIONS[old], (old, new)
            assert submission.status == new
    assert not {"enrolled", "participating"} & set(triage.STATUSES)
    reachable = {new for targets in triage.TRANSITIONS.values() for new in targets}
    assert "withdrawn" not in reachable


def test_status_change_by_post(app: Flask, staff_client: FlaskClient) -> None:
    reference = add(app, "STEP")
    path = f"/coordinator/submissions/{reference}/status"
    version = str(row_version(app, reference))
    response = post(staff_client, path, status="in_review", row_version=version)
    assert response.status_code == 303
    page = staff_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Status changed to In review." in page
    version = str(row_version(app, reference))
    illegal = post(staff_client, path, status="referred", row_version=version)
    assert illegal.status_code == 409 and "cannot move to" in illegal.get_data(as_text=True)
    unknown = post(staff_client, path, status="enrolled", row_version=version)
    assert unknown.status_code == 422
    assert status_of(app, reference) == "in_review"


def test_a_stale_version_is_refused_not_lost(app: Flask, staff_client: FlaskClient) -> None:
    reference = add(app, "STALE")
    stale = str(row_version(app, reference))
    path = f"/coordinator/submissions/{reference}/status"
    assert post(staff_client, path, status="in_review", row_version=stale).status_code == 303
    before = last_audit_id(app)
    response = post(staff_client, path, status="unreachable", row_version=stale)
    assert response.status_code == 409
    assert "Someone else changed this submission" in response.get_data(as_text=True)
    assign = post(staff_client, f"/coordinator/submissions/{reference}/assign", row_version=stale)
    assert assign.status_code == 409
    assert status_of(app, reference) == "in_review" and audit_since(app, before) == []


def test_racing_status_changes_one_wins_the_others_are_told(
    app: Flask, staff_client: FlaskClient
) -> None:
    """Writers released together with the same version: one change lands, every other gets 409.

    Real threads through the app (on PostgreSQL truly concurrent transactions, on SQLite
    serialized by its write lock): no update is lost or applied twice, and the trail holds
    exactly the change that landed.
    """
    reference = add(app, "RACE")
    version = str(row_version(app, reference))
    path = f"/coordinator/submissions/{reference}/status"
    token = csrf_token(staff_client, "/coordinator/")
    cookie = staff_client.get_cookie(app.config["SESSION_COOKIE_NAME"] + "-staff")
    assert cookie is not None
    targets = ["in_review", "not_eligible", "unreachable"] * 3
    gate = threading.Barrier(len(targets))
    answers: dict[str, list[int]] = {target: [] for target in targets}
    before = last_audit_id(app)

    def change(target: str) -> None:
        client = app.test_client()
        client.set_cookie(cookie.key, cookie.value, path="/coordinator")
        gate.wait()
        data = {"csrf_token": token, "status": target, "row_version": version}
        answers[target].append(client.post(path, data=data).status_code)

    threads = [threading.Thread(target=change, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    codes = sorted(code for codes in answers.values() for code in codes)
    assert codes == [303] + [409] * (len(targets) - 1)
    [winner] = [target for target, codes in answers.items() if 303 in codes]
    assert status_of(app, reference) == winner
    assert row_version(app, reference) == int(version) + 1
    changes = [e for e in audit_since(app, before) if e.action == "submission.status_changed"]
    assert [json.loads(e.details)["to"] for e in changes] == [winner]


def test_assignment_to_active_triage_staff_only(
    app: Flask, staff_client: FlaskClient, coordinator: StaffAccount
) -> None:
    reference = add(app, "ASSIGN")
    path = f"/coordinator/submissions/{reference}/assign"
    auditor = make_user(app, role="auditor")
    disabled = make_user(app, role="coordinator")
    with app.app_context():
        user = db.session.get(User, disabled.id)
        assert user is not None
        user.disabled_at = datetime.now(UTC)
        db.session.commit()
    for refused in (auditor.id, disabled.id, 987654):
        version = str(row_version(app, reference))
        response = post(staff_client, path, assignee=str(refused), row_version=version)
        assert response.status_code == 422, refused
    version = str(row_version(app, reference))
    assert (
        post(staff_client, path, assignee=str(coordinator.id), row_version=version).status_code
        == 303
    )
    assert listed(staff_client, f"?assignee={coordinator.id}") == [reference]
    version = str(row_version(app, reference))
    assert post(staff_client, path, assignee="", row_version=version).status_code == 303
    assert listed(staff_client, "?assignee=none") == [reference]


# ---------------------------------------------------------------------------- notes


def test_notes_are_sealed_and_shown_on_the_audited_detail(
    app: Flask, database: Database, staff_client: FlaskClient
) -> None:
    reference = add(app, "NOTED")
    secret = "NOTE-MARKER-Called mother, call back Tuesday"
    response = post(staff_client, f"/coordinator/submissions/{reference}/notes", note=secret)
    assert response.status_code == 303
    assert b"NOTE-MARKER" not in database.raw_bytes()
    page = staff_client.get(f"/coordinator/submissions/{reference}").get_data(as_text=True)
    assert secret in page
    empty = post(staff_client, f"/coordinator/submissions/{reference}/notes", note="   ")
    assert empty.status_code == 422


def test_a_note_moved_to_another_submission_does_not_open(
    app: Flask, coordinator: StaffAccount
) -> None:
    first, second = add(app, "N1"), add(app, "N2")
    with app.app_context():
        session = db.session()
        keyring = current_keyring()
        author = session.get(User, coordinator.id)
        assert author is not None
        submission = triage.find_by_reference(session, first)
        other = triage.find_by_reference(session, second)
        assert submission is not None and other is not None
        note = triage.add_note(session, keyring, submission, "private", author=author)
        note.submission_id = other.id
        session.commit()
        detail = triage.open_detail(session, keyring, other, actor="t")
        assert [n.text for n in detail.notes] == [None]


def test_key_rotation_rewraps_notes_and_they_still_open(
    app: Flask, staff_client: FlaskClient
) -> None:
    reference = add(app, "ROTATE")
    post(staff_client, f"/coordinator/submissions/{reference}/notes", note="ROTATED-NOTE")
    with app.app_context():
        old_key = db.session.scalar(select(Note.key_id))
    result = app.test_cli_runner().invoke(args=["keys", "rotate", "--new-key"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(select(Note.key_id)) not in {None, old_key}
    page = staff_client.get(f"/coordinator/submissions/{reference}").get_data(as_text=True)
    assert "ROTATED-NOTE" in page


def test_shredding_deletes_the_notes(app: Flask, staff_client: FlaskClient) -> None:
    reference = add(app, "SHREDNOTE")
    post(staff_client, f"/coordinator/submissions/{reference}/notes", note="gone soon")
    with app.app_context():
        submission = triage.find_by_reference(db.session(), reference)
        assert submission is not None
        shred_submission(db.session(), submission, actor="patient", reason="withdrawn_by_patient")
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(Note)) == 0


# ---------------------------------------------------------------------------- audit


def test_each_action_writes_exactly_one_row_without_phi(
    app: Flask, staff_client: FlaskClient, coordinator: StaffAccount
) -> None:
    reference = add(app, "TRAIL")
    base = f"/coordinator/submissions/{reference}"
    steps: list[tuple[str, Any]] = [
        ("submission.opened", lambda: staff_client.get(base)),
        (
            "submission.status_changed",
            lambda: post(
                staff_client,
                base + "/status",
                status="in_review",
                row_version=str(row_version(app, reference)),
            ),
        ),
        (
            "submission.assigned",
            lambda: post(
                staff_client,
                base + "/assign",
                assignee=str(coordinator.id),
                row_version=str(row_version(app, reference)),
            ),
        ),
        ("submission.note_added", lambda: post(staff_client, base + "/notes", note="TRAIL note")),
        (
            "submission.searched",
            lambda: post(staff_client, "/coordinator/search", email="email-trail@example.org"),
        ),
    ]
    for action, step in steps:
        before = last_audit_id(app)
        step()
        rows = audit_since(app, before)
        assert [row.action for row in rows] == [action]
        row = rows[0]
        assert row.actor == coordinator.ref
        text = f"{row.target}|{row.details}"
        assert "TRAIL" not in text.upper() and "@" not in text
    details = json.loads(audit_since(app, 0)[-3].details)
    assert details == {"assignee": coordinator.ref}


# ---------------------------------------------------------------------------- access


def _routes(reference: str) -> list[tuple[str, str]]:
    base = f"/coordinator/submissions/{reference}"
    return [
        ("GET", "/coordinator/?status=new"),
        ("GET", base),
        ("GET", "/coordinator/consent/2026-11-v1/en"),
        ("POST", "/coordinator/search"),
        ("POST", base + "/status"),
        ("POST", base + "/assign"),
        ("POST", base + "/notes"),
        ("POST", "/coordinator/export"),
    ]


EXPECTED = {
    # role: status of each route above, in order
    "coordinator": [200, 200, 200, 200, 303, 303, 303, 403],
    "admin": [200, 200, 200, 200, 303, 303, 303, 200],
    "auditor": [200, 403, 403, 403, 403, 403, 403, 403],
}


@pytest.mark.parametrize("role", ["anonymous", "auditor", "coordinator", "admin"])
def test_every_triage_route_by_role(app: Flask, role: str) -> None:
    reference = add(app, "ROLE")
    client = app.test_client()
    if role != "anonymous":
        login(client, make_user(app, role=role))
    for number, (method, path) in enumerate(_routes(reference)):
        if method == "GET":
            response = client.get(path)
        else:
            data = {
                "status": "in_review",
                "assignee": "",
                "note": "hello",
                "email": "a@example.org",
                "reason": "other",
                "row_version": str(row_version(app, reference)),
            }
            page = "/coordinator/login" if role == "anonymous" else "/coordinator/"
            token = csrf_token(client, page)
            response = client.post(path, data={"csrf_token": token, **data})
        if role == "anonymous":
            assert response.status_code == 303, path
            assert response.headers["Location"].startswith("/coordinator/login"), path
            continue
        assert response.status_code == EXPECTED[role][number], (role, path)
        body = response.get_data(as_text=True)
        if response.status_code == 403:
            assert "NAME-ROLE" not in body and "You do not have access" in body
    if role == "auditor":
        home = client.get("/coordinator/").get_data(as_text=True)
        assert reference not in home and "does not open submissions" in home


def test_guessed_references_get_404_and_write_nothing(
    app: Flask, staff_client: FlaskClient
) -> None:
    add(app, "REAL")
    before = last_audit_id(app)
    for path in ("2222-2222", "<script>", "../users", "A" * 300):
        assert staff_client.get(f"/coordinator/submissions/{path}").status_code == 404
    not_found = staff_client.get("/coordinator/submissions/2222-2222").get_data(as_text=True)
    unknown = staff_client.get("/coordinator/no/such/page").get_data(as_text=True)
    assert not_found.replace("submissions/2222-2222", "no/such/page") == unknown
    for action in ("status", "assign", "notes"):
        response = post(
            staff_client, f"/coordinator/submissions/2222-2222/{action}", row_version="1"
        )
        assert response.status_code == 404
    assert audit_since(app, before) == []


def iter_events(app: Flask) -> Iterator[AuditEvent]:
    yield from audit_since(app, 0)


def test_no_audit_row_anywhere_holds_phi(app: Flask, staff_client: FlaskClient) -> None:
    reference = add(app, "NOPHI")
    staff_client.get(f"/coordinator/submissions/{reference}")
    post(staff_client, f"/coordinator/submissions/{reference}/notes", note="NOPHI in a note")
    for row in iter_events(app):
        assert "NOPHI" not in f"{row.actor}|{row.target}|{row.details}".upper()
