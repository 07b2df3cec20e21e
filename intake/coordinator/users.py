"""Account management for admins: list, create, disable, reset two-factor.

Every change is a POST with a CSRF token and writes its audit row through ``intake.accounts``.
No page here ever shows a TOTP secret: a new or reset account gets its secret when its owner,
past the password step, opens the enrolment page, and a new account's owner replaces the first
password at that first sign-in.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as WerkzeugResponse

from intake import accounts
from intake.coordinator import bp
from intake.coordinator.auth import current_user, login_required
from intake.extensions import db
from intake.models import ROLES, User

FIRST_SIGN_IN = (
    "At their first sign-in they set up two-step verification (only they see its key) "
    "and replace the first password with their own."
)


def _users_page(status: int = 200, **context: Any) -> tuple[str, int]:
    context.setdefault("form", {"email": "", "role": "coordinator"})
    users = accounts.list_users(db.session())
    page = render_template("coordinator/users.html", users=users, roles=ROLES, **context)
    return page, status


def _actor() -> str:
    user = current_user()
    assert user is not None  # nosec B101  # type narrowing; login_required guarantees it
    return user.ref


def _target(user_id: int) -> User | None:
    """The account to change, or None (with a message) when it is the admin's own."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    if user.ref == _actor():
        flash("To change your own account, use `flask --app intake users`.", "error")
        return None
    return user


def _redirect_to_list() -> WerkzeugResponse:
    return redirect(url_for("coordinator.users"), 303)


@bp.get("/users")
@login_required("admin")
def users() -> ResponseReturnValue:
    return _users_page()


@bp.post("/users")
@login_required("admin")
def users_create() -> ResponseReturnValue:
    form = {name: request.form.get(name, "").strip() for name in ("email", "role")}
    password = request.form.get("password", "")
    try:
        user = accounts.create_user(
            db.session(), form["email"], form["role"], password, actor=_actor()
        )
    except accounts.AccountError as error:
        db.session.rollback()
        field = {
            accounts.InvalidEmail: "email",
            accounts.DuplicateEmail: "email",
            accounts.InvalidRole: "role",
            accounts.WeakPassword: "password",
        }.get(type(error), "email")
        message = str(error)
        return _users_page(422, form=form, errors=[(field, message[:1].upper() + message[1:])])
    db.session.commit()
    flash(f"Created {user.email} ({user.role}). {FIRST_SIGN_IN}", "info")
    return _redirect_to_list()


@bp.post("/users/<int:user_id>/disable")
@login_required("admin")
def users_disable(user_id: int) -> ResponseReturnValue:
    user = _target(user_id)
    if user is None:
        return _redirect_to_list()
    if accounts.disable_user(db.session(), user, actor=_actor()):
        flash(f"Disabled {user.email}. Their sessions have ended.", "info")
    db.session.commit()
    return _redirect_to_list()


@bp.post("/users/<int:user_id>/reset-2fa")
@login_required("admin")
def users_reset_2fa(user_id: int) -> ResponseReturnValue:
    user = _target(user_id)
    if user is None:
        return _redirect_to_list()
    accounts.reset_2fa(db.session(), user, actor=_actor())
    db.session.commit()
    flash(
        f"Reset two-step verification of {user.email}; their sessions have ended. "
        "They set it up again at their next sign-in (only they see the new key).",
        "info",
    )
    return _redirect_to_list()
