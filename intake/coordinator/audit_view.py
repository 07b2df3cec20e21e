"""The audit trail, for admins and auditors: filter, page through, and see the chain's state.

Read-only for everyone: this module has GET routes only, and the database refuses updates and
deletes of ``audit_events`` whatever the app does (triggers, migration 0001). Filters are codes
(an actor such as ``user:12``, an action such as ``auth.login``) and dates, so a URL never holds
anything identifying. Pages are keyset-paginated on the row id, newest first.

Each page load re-verifies the whole chain with :func:`intake.audit.verify_chain`: O(rows),
in its own read snapshot, so it never blocks writers (docs/operations.md gives the cost).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import ColumnElement, Select, exists, select
from sqlalchemy.orm import Session

from intake import audit
from intake.coordinator import bp
from intake.coordinator.auth import login_required
from intake.database import read_only
from intake.extensions import db
from intake.models import AuditEvent, User, utcnow

PAGE_SIZE = 50
ACTOR = re.compile(r"[A-Za-z0-9_.:+-]{1,120}")  # no "@" or spaces: codes, never an email
ACTION = re.compile(r"[a-z0-9_.]{1,64}")
USER_REF = re.compile(r"user:([0-9]{1,18})")
MESSAGES = {
    "actor": "Enter an actor code like user:12, patient or cli:name.",
    "action": "Choose an action from the list.",
    "from": "Enter the start date as YYYY-MM-DD.",
    "to": "Enter the end date as YYYY-MM-DD, on or after the start date.",
}


@dataclass
class Filters:
    actor: str = ""
    action: str = ""
    start: date | None = None
    end: date | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.actor:
            found.append(AuditEvent.actor == self.actor)
        if self.action:
            found.append(AuditEvent.action == self.action)
        if self.start:
            found.append(AuditEvent.occurred_at >= _midnight(self.start))
        if self.end:
            found.append(AuditEvent.occurred_at < _midnight(self.end + timedelta(days=1)))
        return found

    def query_args(self, without: str = "") -> dict[str, str]:
        """The filters as GET parameters (but ``without``), for links to other pages."""
        values = {
            "actor": self.actor,
            "action": self.action,
            "from": self.start.isoformat() if self.start else "",
            "to": self.end.isoformat() if self.end else "",
        }
        return {name: value for name, value in values.items() if value and name != without}


@dataclass(frozen=True)
class Page:
    rows: list[AuditEvent]
    newer: int | None  # "after" cursor of the previous (newer) page, if there is one
    older: int | None  # "before" cursor of the next (older) page, if there is one


@dataclass(frozen=True)
class ChainState:
    report: audit.ChainReport
    checked_at: datetime
    milliseconds: int


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _date(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) else None
    except ValueError:
        return None


def parse_filters(args: Any) -> Filters:
    """Read the GET parameters; a bad one is named in ``errors`` and left out of the query."""
    filters = Filters()
    actor, action = args.get("actor", "").strip(), args.get("action", "").strip()
    start, end = args.get("from", "").strip(), args.get("to", "").strip()
    for name, value, pattern in (("actor", actor, ACTOR), ("action", action, ACTION)):
        if value and not pattern.fullmatch(value):
            filters.errors.append((name, MESSAGES[name]))
        elif value:
            setattr(filters, name, value)
    filters.start = _date(start) if start else None
    filters.end = _date(end) if end else None
    if start and filters.start is None:
        filters.errors.append(("from", MESSAGES["from"]))
    if end and (filters.end is None or (filters.start and filters.end < filters.start)):
        filters.errors.append(("to", MESSAGES["to"]))
        filters.end = None
    return filters


def _cursor(args: Any, name: str) -> int | None:
    value = args.get(name, "")
    return int(value) if value.isdigit() and len(value) < 19 else None


def _filtered(filters: Filters) -> Select[AuditEvent]:
    return select(AuditEvent).where(*filters.conditions())


def _any(session: Session, filters: Filters, condition: ColumnElement[bool]) -> bool:
    return bool(session.scalar(select(exists().where(*filters.conditions(), condition))))


def fetch_page(
    session: Session, filters: Filters, *, before: int | None, after: int | None
) -> Page:
    """One page, newest first, with cursors for the pages either side (keyset on the id)."""
    if after is not None:
        query = _filtered(filters).where(AuditEvent.id > after).order_by(AuditEvent.id)
        rows = list(reversed(session.scalars(query.limit(PAGE_SIZE)).all()))
    else:
        query = _filtered(filters).order_by(AuditEvent.id.desc())
        if before is not None:
            query = query.where(AuditEvent.id < before)
        rows = list(session.scalars(query.limit(PAGE_SIZE)).all())
    if not rows:
        return Page([], None, None)
    newer = rows[0].id if _any(session, filters, AuditEvent.id > rows[0].id) else None
    older = rows[-1].id if _any(session, filters, AuditEvent.id < rows[-1].id) else None
    return Page(rows, newer, older)


def staff_emails(session: Session, rows: list[AuditEvent]) -> dict[str, str]:
    """``user:N -> email`` for the staff accounts named on this page (work identities)."""
    ids = {
        int(match.group(1))
        for row in rows
        for value in (row.actor, row.target or "")
        if (match := USER_REF.fullmatch(value))
    }
    if not ids:
        return {}
    found = session.execute(select(User.id, User.email).where(User.id.in_(ids)))
    return {f"user:{user_id}": email for user_id, email in found}


def chain_state(session: Session) -> ChainState:
    started = time.perf_counter()
    report = audit.verify_chain(session)
    elapsed = int((time.perf_counter() - started) * 1000)
    return ChainState(report, utcnow(), elapsed)


def known_actions(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))


@bp.get("/audit")
@login_required("admin", "auditor")
def audit_trail() -> ResponseReturnValue:
    session = db.session()
    read_only(session)
    filters = parse_filters(request.args)
    before, after = _cursor(request.args, "before"), _cursor(request.args, "after")
    page = (
        Page([], None, None)
        if filters.errors
        else fetch_page(session, filters, before=before, after=after)
    )
    context = {
        "filters": filters,
        "errors": filters.errors,
        "page": page,
        "emails": staff_emails(session, page.rows),
        "actions": known_actions(session),
        "chain": chain_state(session),
        "paged": before is not None or after is not None,
    }
    # No commit before rendering: it would expire the rows and make the template query again
    # (on SQLite in a writing transaction). The request's teardown ends this read.
    return render_template("coordinator/audit.html", **context), 400 if filters.errors else 200
