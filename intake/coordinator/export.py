"""CSV export of the filtered submissions: admins only, with a stated reason, audited first.

The ``submissions.exported`` row (reason code and row count, from a COUNT query) commits
before the first byte is sent. The rows then stream from a read-only transaction, fetched by
keyset a batch at a time and sent a batch per chunk, so memory stays constant however many rows
there are.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from flask import Response, request, stream_with_context
from flask.typing import ResponseReturnValue

from intake import triage
from intake.coordinator import bp
from intake.coordinator.auth import current_user, login_required
from intake.coordinator.triage import list_page
from intake.database import read_only
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import utcnow

# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")
_FORMULA_FIRST = frozenset(FORMULA_STARTS)  # each is one character: test the first only
BOM = "\ufeff"  # so spreadsheet programs read the file as UTF-8


def safe_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in _FORMULA_FIRST else text


def _safe_row(row: list[Any]) -> list[str]:
    """:func:`safe_cell` of each value, with its string case inline (most cells are strings)."""
    return [
        ("'" + value if value[:1] in _FORMULA_FIRST else value)
        if value.__class__ is str
        else safe_cell(value)
        for value in row
    ]


def csv_chunks(batches: Iterable[list[list[Any]]]) -> Iterator[str]:
    """RFC 4180 CSV (the csv module's quoting, CRLF line ends): the header, then one string
    per batch of rows, so the per-chunk cost of the response is paid once per batch."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(triage.EXPORT_COLUMNS)
    yield BOM + buffer.getvalue()
    for rows in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(map(_safe_row, rows))
        yield buffer.getvalue()


def _stream(filters: triage.Filters, now: datetime) -> Iterator[str]:
    """The CSV, read in a transaction of its own.

    Flask tears the view's context down before the body is sent, so the stream begins its own
    transaction: read-only (SQLite: a deferred BEGIN, so no write lock is held while a slow
    client downloads), and ended as soon as the last row is out.
    """
    session = db.session()
    read_only(session)
    try:
        yield from csv_chunks(triage.iter_export_batches(session, current_keyring(), filters, now))
    finally:
        session.rollback()


@bp.post("/export")
@login_required("admin")
def export() -> ResponseReturnValue:
    filters, errors = triage.Filters.parse(request.form)
    reason = request.form.get("reason", "")
    if reason not in triage.EXPORT_REASONS:
        errors.append(("reason", "Choose why you are exporting these submissions"))
    if errors:
        return list_page(status=422, errors=errors, form=request.form)
    user = current_user()
    assert user is not None  # nosec B101  # type narrowing; login_required guarantees it
    session, now = db.session(), utcnow()
    count = triage.export_count(session, filters, now)
    triage.record_export(session, filters, reason=reason, rows=count, actor=user.ref)
    session.commit()  # the audit row is durable before any data leaves
    response = Response(stream_with_context(_stream(filters, now)), mimetype="text/csv")
    filename = f"submissions-{now:%Y%m%dT%H%M%SZ}.csv"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
