"""Account management for admins: list, create, disable, reset two-factor.

Every change is a POST with a CSRF token and writes its audit row through ``intake.accounts``.
A new or reset TOTP secret is shown once, in the response to the POST that made it, and never
again here (the user's own enrolment page shows it until they enrol).
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as WerkzeugResponse

from intake import accounts
from intake.coordinator import bp
from intake.coordinator.auth import (
    current_user,
    login_required,
    qr_svg,
    spaced_secret,
    totp_issuer,
)
from intake.extensions import db
from intake.models import ROLES, User


def _users_page(status: int = 200, **context: Any) -> tuple[str, int]:
    context.setdefault("form", {"email": "", "role": "coordinator"})
    users = accounts.list_users(db.session())
    page = render_template("coordinator/users.html", users=users, roles=ROLES, **context)
    return page, status


def _secret_page(user: User, heading: str, status: int) -> tuple[str, int]:
    uri = accounts.provisioning_uri(user, issuer=totp_issuer())
    page = render_template(
        "coordinator/user_secret.html",
        user=user,
        heading=heading,
        uri=uri,
        qr=qr_svg(uri),
        secret=spaced_secret(user.totp_secret),
    )
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
    return _secret_page(user, "Account created", 201)


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
    return _secret_page(user, "Two-step verification reset", 200)
