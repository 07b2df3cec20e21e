"""A staff member's own account: change the password, see and end their other sessions.

A password change asks for both factors again (``accounts.reauthenticate``), and ends every
other session of the account; the session that made it stays signed in.
"""

from __future__ import annotations

import uuid

from flask import flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as WerkzeugResponse

from intake import accounts, staff_sessions
from intake.coordinator import bp
from intake.coordinator.auth import (
    BAD_CODE,
    NO_CODE,
    THROTTLED,
    client_ip,
    clock_time,
    current_staff_session,
    current_user,
    guard_settings,
    login_required,
    new_password_from_form,
    sentence,
    session_limits,
)
from intake.extensions import db
from intake.models import StaffSession, User

WRONG_PASSWORD = "Your current password is not right."  # noqa: S105  # nosec B105  # a message


bp.add_app_template_filter(staff_sessions.browser_name, "browser_name")


def _me() -> tuple[User, StaffSession]:
    user, live = current_user(), current_staff_session()
    assert user is not None and live is not None  # nosec B101  # login_required guarantees it
    return user, live


def _to_account() -> WerkzeugResponse:
    return redirect(url_for("coordinator.account"), 303)


@bp.get("/account")
@login_required()
def account() -> ResponseReturnValue:
    user, live = _me()
    sessions = staff_sessions.live_sessions(db.session(), user, session_limits(), clock_time())
    return render_template(
        "coordinator/account.html", sessions=sessions, this_session=live.id, user=user
    )


@bp.get("/account/password")
@login_required()
def change_password() -> ResponseReturnValue:
    return render_template("coordinator/change_password.html")


@bp.post("/account/password")
@login_required()
def change_password_submit() -> ResponseReturnValue:
    user, live = _me()
    current = request.form.get("current_password", "")
    code = request.form.get("code", "").strip()
    new_password, errors = new_password_from_form()
    errors = _missing_current(current, code) + errors
    if errors:
        return _change_password_page(errors)
    try:
        accounts.reauthenticate(
            db.session(), user, current, code, ip=client_ip(), guard=guard_settings()
        )
    except accounts.LoginThrottled:
        db.session.commit()
        return _change_password_page([("current_password", THROTTLED)], 429)
    except accounts.AuthenticationFailed:
        db.session.commit()
        return _change_password_page([("current_password", f"{WRONG_PASSWORD} {BAD_CODE}")])
    db.session.commit()  # the code is used up, whatever happens to the new password
    try:
        accounts.change_password(
            db.session(), user, new_password, actor=user.ref, keep=live.token_hash
        )
    except accounts.WeakPassword as error:
        db.session.rollback()
        return _change_password_page([("new_password", sentence(str(error)))])
    db.session.commit()
    session["sv"] = user.session_version  # this session lives on; every other one has ended
    flash("Your password is changed. Your other sessions have ended.", "info")
    return _to_account()


def _missing_current(current: str, code: str) -> list[tuple[str, str]]:
    errors = []
    if not current:
        errors.append(("current_password", "Enter your current password."))
    if not code:
        errors.append(("code", NO_CODE))
    return errors


def _change_password_page(errors: list[tuple[str, str]], status: int = 422) -> ResponseReturnValue:
    return render_template("coordinator/change_password.html", errors=errors), status


@bp.post("/account/sessions/<uuid:session_id>/end")
@login_required()
def end_session(session_id: uuid.UUID) -> ResponseReturnValue:
    user, live = _me()
    if session_id == live.id:
        flash("To end this session, sign out.", "error")
        return _to_account()
    try:
        staff_sessions.end_one(db.session(), user, session_id, actor=user.ref)
    except staff_sessions.SessionNotFound:
        db.session.rollback()
        flash("That session had ended already.", "info")
        return _to_account()
    db.session.commit()
    flash("The session has ended.", "info")
    return _to_account()


@bp.post("/account/sessions/end-others")
@login_required()
def end_other_sessions() -> ResponseReturnValue:
    user, live = _me()
    count = staff_sessions.end_others(db.session(), user, keep=live.token_hash, actor=user.ref)
    db.session.commit()
    flash(
        "No other session was open."
        if count == 0
        else f"Ended {count} other session{'' if count == 1 else 's'}.",
        "info",
    )
    return _to_account()
