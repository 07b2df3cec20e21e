"""Triage pages: the submissions list, search, the detail page and its actions.

Views stay thin: ``intake.triage`` does the work and writes the audit rows; a view commits
once. The detail page commits the ``submission.opened`` row *before* it renders, so no PHI
leaves without a durable audit row. Every action is a POST (CSRF checked app-wide).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as WerkzeugResponse

from intake import consent, triage
from intake.coordinator import bp
from intake.coordinator.auth import current_user, login_required
from intake.database import read_only
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import Submission, User
from intake.sealing import SealingError
from intake.submissions import AGE_BANDS, SubmissionGone
from intake.vocabulary import vocabulary


def _user() -> User:
    user = current_user()
    assert user is not None  # nosec B101  # type narrowing; login_required guarantees it
    return user


def cancer_label(code: str) -> str:
    try:
        return vocabulary().label(code, "en")
    except KeyError:
        return code


def _filter_choices() -> dict[str, Any]:
    return {
        "status_labels": triage.STATUS_LABELS,
        "cancer_groups": vocabulary().grouped(),
        "age_bands": [band for _, band in AGE_BANDS],
        "export_reasons": triage.EXPORT_REASONS,
        "cancer_label": cancer_label,
    }


def list_page(
    *, status: int = 200, errors: list[tuple[str, str]] | None = None, form: Any = None
) -> tuple[str, int]:
    """The list for the filters in the query string (or ``form``, for a refused export)."""
    filters, filter_errors = triage.Filters.parse(form if form is not None else request.args)
    session = db.session()
    if form is None:
        read_only(session)  # a GET only reads: never queue behind writers
    cursor = request.args.get("after")
    page = triage.list_page(session, filters, cursor=cursor, size=triage.PAGE_SIZE)
    page_html = render_template(
        "coordinator/submissions.html",
        filters=filters,
        page=page,
        counts=triage.status_counts(session, filters, cap=triage.STATUS_COUNT_CAP),
        assignable=triage.assignable_users(session),
        emails=triage.staff_emails(session),
        errors=[*filter_errors, *(errors or [])],
        **_filter_choices(),
    )
    return page_html, 422 if filter_errors and status == 200 else status


@bp.post("/search")
@login_required(*triage.TRIAGE_ROLES)
def search() -> ResponseReturnValue:
    """Exact email search: the address comes by POST only, and is never echoed or stored."""
    email = request.form.get("email", "").strip()
    if not email or "@" not in email or len(email) > 254:
        return list_page(status=422, errors=[("email", "Enter the exact email address to find")])
    session = db.session()
    rows = triage.search_by_email(session, current_keyring(), email, actor=_user().ref)
    db.session.commit()
    page = render_template(
        "coordinator/search_results.html",
        rows=rows,
        emails=triage.staff_emails(session),
        **_filter_choices(),
    )
    return page, 200


def _submission_or_404(reference: str) -> Submission:
    submission = triage.find_by_reference(db.session(), reference)
    if submission is None:
        abort(404)
    return submission


@bp.get("/submissions/<reference>")
@login_required(*triage.TRIAGE_ROLES)
def submission_detail(reference: str) -> ResponseReturnValue:
    session = db.session()
    submission = _submission_or_404(reference)
    detail: triage.Detail | None = None
    if submission.shredded_at is None:
        try:
            detail = triage.open_detail(session, current_keyring(), submission, actor=_user().ref)
        except SealingError:
            db.session.commit()  # the open_failed row: a record that will not open may be tampering
            raise
        db.session.commit()  # the audit row is durable before a byte of PHI is rendered
    return render_template(
        "coordinator/submission.html",
        submission=submission,
        detail=detail,
        consent_check=_consent_check(submission),
        transitions=sorted(triage.TRANSITIONS.get(submission.status, ())),
        assignable=triage.assignable_users(session),
        emails=triage.staff_emails(session),
        duplicates=triage.duplicates(session, submission),
        history=triage.history(session, submission),
        event_summary=triage.event_summary,
        **_filter_choices(),
    )


def _consent_check(submission: Submission) -> bool | None:
    """Whether the stored hash is the shipped text's (None: no such text or no hash)."""
    try:
        text = consent.signed_text(submission.consent_version, submission.consent_language)
    except (KeyError, consent.ConsentError):
        return None
    return (
        None
        if submission.consent_text_sha256 is None
        else (text.sha256() == submission.consent_text_sha256)
    )


@bp.get("/consent/<version>/<language>")
@login_required(*triage.TRIAGE_ROLES)
def consent_text(version: str, language: str) -> ResponseReturnValue:
    """The exact authorization text of a version and language, as signed."""
    try:
        text = consent.signed_text(version, language)
    except (KeyError, consent.ConsentError):
        abort(404)
    return render_template("coordinator/consent_text.html", consent_text=text)


# ---------------------------------------------------------------------------- actions


def _expected_version() -> int:
    raw = request.form.get("row_version", "")
    if not raw.isdigit():
        abort(400)
    return int(raw)


GONE = "This submission was withdrawn; nothing can be changed."
NOTE_GONE = "This submission was withdrawn, so your note was not saved: nothing can be added."


def _act(
    reference: str, action: Callable[[Submission], str], *, gone: str = GONE
) -> ResponseReturnValue:
    """Run one action on the submission, commit it, or show why it was refused."""
    submission = _submission_or_404(reference)
    try:
        message = action(submission)
    except (triage.StaleSubmission, triage.IllegalTransition, SubmissionGone) as error:
        db.session.rollback()
        text = gone if isinstance(error, SubmissionGone) else str(error)
        return _refused(reference, text, 409)
    except triage.TriageError as error:
        db.session.rollback()
        return _refused(reference, str(error), 422)
    db.session.commit()
    flash(message, "info")
    return _to_detail(reference)


def _refused(reference: str, message: str, status: int) -> tuple[str, int]:
    page = render_template("coordinator/refused.html", reference=reference, message=message)
    return page, status


def _to_detail(reference: str) -> WerkzeugResponse:
    return redirect(url_for("coordinator.submission_detail", reference=reference), 303)


@bp.post("/submissions/<reference>/status")
@login_required(*triage.TRIAGE_ROLES)
def submission_status(reference: str) -> ResponseReturnValue:
    status = request.form.get("status", "")
    version = _expected_version()

    def change(submission: Submission) -> str:
        if status not in triage.STATUS_LABELS:
            raise triage.TriageError("Choose a status from the list.")
        triage.change_status(
            db.session(), submission, status, expected_version=version, actor=_user().ref
        )
        return f"Status changed to {triage.STATUS_LABELS[status]}."

    return _act(reference, change)


@bp.post("/submissions/<reference>/assign")
@login_required(*triage.TRIAGE_ROLES)
def submission_assign(reference: str) -> ResponseReturnValue:
    raw = request.form.get("assignee", "")
    version = _expected_version()

    def change(submission: Submission) -> str:
        if raw and not raw.isdigit():
            raise triage.InvalidAssignee
        assignee = int(raw) if raw else None
        triage.assign(
            db.session(), submission, assignee, expected_version=version, actor=_user().ref
        )
        return "Assigned." if assignee is not None else "Unassigned."

    return _act(reference, change)


@bp.post("/submissions/<reference>/notes")
@login_required(*triage.TRIAGE_ROLES)
def submission_note(reference: str) -> ResponseReturnValue:
    text = request.form.get("note", "")

    def add(submission: Submission) -> str:
        triage.add_note(db.session(), current_keyring(), submission, text, author=_user())
        return "Note added."

    return _act(reference, add, gone=NOTE_GONE)
