"""Staff sign-in, the staff session, and the access guard of every ``/coordinator`` route.

Sign-in is two steps: email and password, then a TOTP code (or, before the account has one,
enrolment with a QR code whose secret is made right then), and for a new account a third:
choosing its own password. The staff cookie is signed and holds the user id, the user's
``session_version``, a random session token, and the sign-in and last-seen times. Each request
checks all of them:

- the token must name a live row of ``staff_sessions`` (``intake.staff_sessions``), so the
  owner can end one session from another device;
- the version must equal the user's row, so sign-out, disabling, a 2FA reset and a password
  change (which bump it) end every session of that user at once, on every device;
- the last request must be under ``SESSION_IDLE_MINUTES`` ago (automatic logoff) and the
  sign-in under ``SESSION_MAX_HOURS`` ago.

The session is cleared and re-created at both sign-in steps, so nothing set before sign-in
survives it (session fixation). Staff pages use a cookie of their own with ``SameSite=Strict``;
the patient pages keep theirs (``SameSite=Lax``), see :class:`SurfaceSessionInterface`.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar, cast

import segno
from flask import (
    Flask,
    Request,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import (
    NullSession,
    SecureCookieSession,
    SecureCookieSessionInterface,
    SessionInterface,
    SessionMixin,
)
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from intake import accounts, audit, staff_sessions
from intake.coordinator import bp
from intake.database import read_only
from intake.extensions import db
from intake.models import ROLES, StaffSession, User
from intake.web import render_error

STAFF_PREFIX = "/coordinator"
ACCESS_ATTR = "intake_staff_roles"
PUBLIC_ATTR = "intake_staff_public"
# Tests move staff-session time with app.extensions[CLOCK_EXTENSION] = callable returning epoch s.
CLOCK_EXTENSION = "intake.staff_clock"
PENDING_SECONDS = 300  # between the password and the code
HOME = "coordinator.home"
# Printable URL characters only: no backslash, no control characters, no spaces.
SAFE_NEXT = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:@/?-]+")
BAD_CREDENTIALS = "The email address or password is not right."
THROTTLED = "Too many attempts. Wait 15 minutes, then try again."
BAD_CODE = "The code is not right. Enter the 6-digit code your app shows now."
NO_CODE = "Enter the 6-digit code."
# How an empty field is named in "Enter your ...": the field's own name unless listed.
FIELD_NAMES = {"email": "email address"}

View = TypeVar("View", bound=Callable[..., ResponseReturnValue])


# ---------------------------------------------------------------------------- cookies


class StaffCookie(SecureCookieSession):
    """The staff cookie's content; its type tells :meth:`save_session` which cookie to set."""


class StaffSessionInterface(SecureCookieSessionInterface):
    """A cookie of its own: ``<name>-staff``, ``SameSite=Strict``, its own signing salt.

    Strict keeps the browser from sending it on any request another site starts, links
    included. The patient cookie cannot be replayed as a staff one (different salt), and a
    staff session never rides along with the public form.
    """

    salt = "intake-staff-session"
    session_class = StaffCookie

    def get_cookie_name(self, app: Flask) -> str:
        return f"{super().get_cookie_name(app)}-staff"

    def get_cookie_samesite(self, app: Flask) -> str:
        return "Strict"


class SurfaceSessionInterface(SessionInterface):
    """The staff cookie under ``/coordinator``; the app's own interface everywhere else."""

    def __init__(self, patient: SessionInterface) -> None:
        self.patient = patient
        self.staff = StaffSessionInterface()

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if is_staff_path(request.path):
            return self.staff.open_session(app, request)
        return self.patient.open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if isinstance(session, StaffCookie):
            self.staff.save_session(app, session, response)
        else:
            self.patient.save_session(app, session, response)

    def make_null_session(self, app: Flask) -> NullSession:
        return self.patient.make_null_session(app)

    def is_null_session(self, obj: object) -> bool:
        return self.patient.is_null_session(obj)


def is_staff_path(path: str) -> bool:
    return path == STAFF_PREFIX or path.startswith(STAFF_PREFIX + "/")


def install_staff_sessions(app: Flask) -> None:
    """Give staff pages their own cookie, keeping whatever the patient pages use.

    Call it after every other change to ``app.session_interface`` (``create_app`` does).
    """
    app.session_interface = SurfaceSessionInterface(app.session_interface)


# ---------------------------------------------------------------------------- access


def current_user() -> User | None:
    """The signed-in staff user of this request, if any."""
    return cast(User | None, g.get("staff_user"))


def current_staff_session() -> StaffSession | None:
    """The server-side record of this request's staff session, if signed in."""
    return cast(StaffSession | None, g.get("staff_session"))


def login_required(*roles: str) -> Callable[[View], View]:
    """Declare who may use a staff view: any signed-in user, or only ``roles``.

    Anonymous requests go to the sign-in page; a signed-in user without the role gets 403.
    """
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            user = current_user()
            if user is None:
                return _to_sign_in()
            if roles and user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        setattr(guarded, ACCESS_ATTR, roles)
        return cast(View, guarded)

    return decorate


def public(view: View) -> View:
    """Mark a staff view as reachable without signing in (the sign-in pages only)."""
    setattr(view, PUBLIC_ATTR, True)
    return view


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    """Resume the session, then refuse anything not declared reachable by this user."""
    view = current_app.view_functions.get(request.endpoint or "")
    _resume_session()
    if getattr(view, PUBLIC_ATTR, False):
        return None
    if not hasattr(view, ACCESS_ATTR):
        current_app.logger.error("staff view %s declares no access; refused", request.endpoint)
        abort(403)
    if current_user() is None:
        return _to_sign_in()
    return None


@bp.errorhandler(403)
def _audit_refusal(error: HTTPException) -> ResponseReturnValue:
    """Every refusal on the staff surface is an audit row: who, and which page (never the query).

    Whatever the refused request had written is rolled back first: a refusal changes nothing.
    """
    db.session.rollback()
    user = current_user()
    try:
        audit.record(
            db.session(),
            actor=user.ref if user is not None else accounts.ANONYMOUS,
            action="access.denied",
            target=user.ref if user is not None else None,
            details={"endpoint": request.endpoint or "unknown", "method": request.method},
        )
        db.session.commit()
    except SQLAlchemyError:
        db.session.rollback()
        current_app.logger.error("could not audit a refusal of %s", request.endpoint)
    return render_error(error)


@bp.context_processor
def _staff_context() -> dict[str, Any]:
    return {"staff_user": current_user()}


def _to_sign_in() -> WerkzeugResponse:
    target = _safe_next(request.full_path) if request.method == "GET" else None
    return redirect(url_for("coordinator.login", next=target), 303)


def _safe_next(target: str | None) -> str | None:
    """Only a path on the staff surface: never another host, so no open redirect."""
    if not target:
        return None
    target = target.removesuffix("?")
    path = target.split("?", 1)[0]
    if not is_staff_path(path) or not SAFE_NEXT.fullmatch(target) or "//" in target:
        return None
    return None if ".." in path.split("/") else target


# ---------------------------------------------------------------------------- session


def clock() -> int:
    hook = current_app.extensions.get(CLOCK_EXTENSION)
    return int(hook() if hook else time.time())


def clock_time() -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


def session_limits() -> staff_sessions.Limits:
    config = current_app.config
    return staff_sessions.Limits(
        idle=timedelta(minutes=config["SESSION_IDLE_MINUTES"]),
        lifetime=timedelta(hours=config["SESSION_MAX_HOURS"]),
    )


def _rotate() -> None:
    """Drop everything the session held (CSRF token included) and start a fresh one."""
    session.clear()
    g.pop("csrf_token", None)
    session["nonce"] = secrets.token_urlsafe(16)


def _resume_session() -> None:
    uid = session.get("uid")
    if uid is None:
        return
    read_only(db.session())
    user = db.session.get(User, uid)
    live = staff_sessions.find_live(db.session(), uid, str(session.get("sid", "")))
    db.session.commit()  # end the read: the view begins its own transaction, in its own mode
    if user is None or live is None or not user.active or session.get("sv") != user.session_version:
        session.clear()
        return
    now = clock()
    reason = _expiry(now)
    if reason:
        _end_expired(user, live, reason)
        return
    session["seen_at"] = now
    if staff_sessions.touch(db.session(), live, clock_time()):
        db.session.commit()
    g.staff_user = user
    g.staff_session = live


def _expiry(now: int) -> str | None:
    limits = session_limits()  # the same limits "Your sessions" lists live sessions by
    if now - int(session.get("seen_at", 0)) > limits.idle.total_seconds():
        return "idle"
    if now - int(session.get("login_at", 0)) > limits.lifetime.total_seconds():
        return "absolute"
    return None


def _end_expired(user: User, live: StaffSession, reason: str) -> None:
    live.ended_at = clock_time()
    audit.record(
        db.session(),
        actor=user.ref,
        action="auth.session_expired",
        target=user.ref,
        details={"reason": reason},
    )
    db.session.commit()
    session.clear()
    if reason == "idle":
        minutes = current_app.config["SESSION_IDLE_MINUTES"]
        flash(f"You were signed out after {minutes} minutes without activity.", "info")
    else:
        flash("Your session reached its time limit. Sign in again.", "info")


def _start_session(user: User) -> None:
    """Record a new server-side session and put its token in a freshly rotated cookie."""
    now = clock()
    token = staff_sessions.open_session(
        db.session(),
        user,
        user_agent=request.user_agent.string,
        address=client_ip(),
        now=clock_time(),
    )
    db.session.commit()
    _rotate()
    session.update(uid=user.id, sv=user.session_version, sid=token, login_at=now, seen_at=now)


# ---------------------------------------------------------------------------- sign-in


def guard_settings() -> accounts.LoginGuard:
    return accounts.guard_from_secret(current_app.config["SECRET_KEY"])


def client_ip() -> str:
    return request.remote_addr or "unknown"


def _login_page(status: int = 200, **context: Any) -> tuple[str, int]:
    context.setdefault("email", "")
    context.setdefault("next", _safe_next(request.values.get("next")))
    return render_template("coordinator/login.html", **context), status


@bp.get("/login")
@public
def login() -> ResponseReturnValue:
    if current_user() is not None:
        return redirect(_safe_next(request.args.get("next")) or url_for(HOME))
    if _arrived_from_another_site():
        # SameSite=Strict: the browser withheld the staff cookie. Writing a fresh one now (the
        # form's CSRF token) would sign the user out, so reload from this site first.
        target = url_for(
            "coordinator.login", next=_safe_next(request.args.get("next")), bounced="1"
        )
        page = render_template("coordinator/continue.html", target=target)
        return page, 200, {"Refresh": f"0; url={target}"}
    return _login_page()


def _arrived_from_another_site() -> bool:
    return (
        request.headers.get("Sec-Fetch-Site") == "cross-site"
        and not session
        and request.args.get("bounced") != "1"
    )


@bp.post("/login")
@public
def login_submit() -> ResponseReturnValue:
    email = request.form.get("email", "").strip()
    password = request.form.get("password", "")
    errors = _missing({"email": email, "password": password})
    if errors:
        return _login_page(422, email=email, errors=errors)
    try:
        user = accounts.authenticate(
            db.session(), email, password, ip=client_ip(), guard=guard_settings()
        )
    except accounts.LoginThrottled:
        db.session.commit()
        return _login_page(429, email=email, errors=[("email", THROTTLED)])
    except accounts.AuthenticationFailed:
        db.session.commit()
        return _login_page(422, email=email, errors=[("email", BAD_CREDENTIALS)])
    db.session.commit()
    next_path = _safe_next(request.form.get("next"))
    _rotate()
    pending = {"uid": user.id, "sv": user.session_version, "at": clock()}
    session["pending"] = pending | ({"next": next_path} if next_path else {})
    endpoint = "coordinator.verify" if user.totp_enrolled_at else "coordinator.enrol"
    return redirect(url_for(endpoint), 303)


def _missing(fields: dict[str, str]) -> list[tuple[str, str]]:
    return [
        (name, f"Enter your {FIELD_NAMES.get(name, name)}.")
        for name, value in fields.items()
        if not value
    ]


def _pending_user(*, verified: bool = False) -> User | None:
    """The user who passed the password step in this session, within the last 5 minutes.

    ``verified``: the user who has passed the code step too, and must now choose a password.
    """
    pending = session.get("pending")
    if not isinstance(pending, dict) or clock() - int(pending.get("at", 0)) > PENDING_SECONDS:
        return None
    if bool(pending.get("verified")) != verified:
        return None
    user = db.session.get(User, pending.get("uid"))
    if user is None or not user.active or user.session_version != pending.get("sv"):
        return None
    return user


def _update_pending(**values: Any) -> None:
    session["pending"] = {**session["pending"], **values}


def _restart_sign_in() -> WerkzeugResponse:
    session.pop("pending", None)
    flash("Sign in again to continue.", "info")
    return redirect(url_for("coordinator.login"), 303)


@bp.get("/login/verify")
@public
def verify() -> ResponseReturnValue:
    user = _pending_user()
    if user is None:
        return _restart_sign_in()
    if user.totp_enrolled_at is None:
        return redirect(url_for("coordinator.enrol"))
    return render_template("coordinator/verify.html")


@bp.get("/login/enrol")
@public
def enrol() -> ResponseReturnValue:
    """Enrolment for an account with no second factor: its secret is made here, once a sign-in.

    Reloading the page shows the same secret; a new sign-in makes a new one, and from then on
    this sign-in's page shows nothing (it must start again).
    """
    user = _pending_user()
    if user is None:
        return _restart_sign_in()
    if user.totp_enrolled_at is not None:
        return redirect(url_for("coordinator.verify"))
    if not session["pending"].get("enrolling"):
        accounts.start_enrolment(db.session(), user)
        db.session.commit()
        assert user.totp_secret is not None  # nosec B101  # type narrowing: just made
        _update_pending(enrolling=accounts.enrolment_binding(user.totp_secret))
    return _enrol_page(user)


def _own_enrolment(user: User) -> bool:
    """The secret on the account is the one this sign-in made (not enrolled, not replaced)."""
    made = session["pending"].get("enrolling")
    return (
        user.totp_enrolled_at is None
        and user.totp_secret is not None
        and made == accounts.enrolment_binding(user.totp_secret)
    )


def _enrol_page(user: User, status: int = 200, **context: Any) -> ResponseReturnValue:
    """The QR code and key, only for an account that has not enrolled and only to the sign-in
    that made the key."""
    if user.totp_enrolled_at is not None:
        return redirect(url_for("coordinator.verify"), 303)
    if not _own_enrolment(user):
        return _enrolment_replaced()
    assert user.totp_secret is not None  # nosec B101  # type narrowing: _own_enrolment
    uri = accounts.provisioning_uri(user, issuer=totp_issuer())
    page = render_template(
        "coordinator/enrol.html",
        qr=qr_svg(uri),
        secret=spaced_secret(user.totp_secret),
        issuer=totp_issuer(),
        **context,
    )
    return page, status


@bp.post("/login/verify")
@public
def verify_submit() -> ResponseReturnValue:
    user = _pending_user()
    if user is None:
        return _restart_sign_in()
    if user.totp_enrolled_at is None:
        return redirect(url_for("coordinator.enrol"), 303)
    return _second_factor(user, enrolling=False)


@bp.post("/login/enrol")
@public
def enrol_submit() -> ResponseReturnValue:
    user = _pending_user()
    if user is None:
        return _restart_sign_in()
    if user.totp_enrolled_at is not None:
        return redirect(url_for("coordinator.verify"), 303)  # never the secret, never a guess
    if not session["pending"].get("enrolling"):
        return redirect(url_for("coordinator.enrol"), 303)
    if not _own_enrolment(user):
        return _enrolment_replaced()
    return _second_factor(user, enrolling=True)


def _enrolment_replaced() -> WerkzeugResponse:
    """Another sign-in started set-up since this one: its key replaced ours; start again."""
    session.pop("pending", None)
    flash(
        "Two-step set-up was started again from another sign-in, so the key you were shown no "
        "longer works. Sign in again. If that was not you, tell an administrator.",
        "error",
    )
    return redirect(url_for("coordinator.login"), 303)


def _second_factor(user: User, *, enrolling: bool) -> ResponseReturnValue:
    """Check the code; an empty or wrong one is counted and audited like any failure."""
    code = request.form.get("code", "").strip()
    try:
        accounts.verify_totp(db.session(), user, code, ip=client_ip(), guard=guard_settings())
    except accounts.LoginThrottled:
        db.session.commit()
        session.pop("pending", None)
        return _login_page(429, errors=[("email", THROTTLED)])
    except accounts.AuthenticationFailed:
        db.session.commit()
        errors = [("code", BAD_CODE if code else NO_CODE)]
        if enrolling:
            return _enrol_page(user, 422, errors=errors)
        return render_template("coordinator/verify.html", errors=errors), 422
    db.session.commit()
    if user.password_change_required:
        _update_pending(verified=True, at=clock())
        return redirect(url_for("coordinator.new_password"), 303)
    return _finish_sign_in(user)


def _finish_sign_in(user: User) -> WerkzeugResponse:
    next_path = _safe_next(session["pending"].get("next"))
    _start_session(user)
    return redirect(next_path or url_for(HOME), 303)


@bp.get("/login/new-password")
@public
def new_password() -> ResponseReturnValue:
    """The last step of a first sign-in: the owner replaces the password they were given."""
    if _pending_user(verified=True) is None:
        return _restart_sign_in()
    return render_template("coordinator/new_password.html")


@bp.post("/login/new-password")
@public
def new_password_submit() -> ResponseReturnValue:
    user = _pending_user(verified=True)
    if user is None:
        return _restart_sign_in()
    password, errors = new_password_from_form()
    if not errors:
        try:
            accounts.change_password(db.session(), user, password, actor=user.ref)
        except accounts.WeakPassword as error:
            db.session.rollback()
            errors = [("new_password", sentence(str(error)))]
    if errors:
        return render_template("coordinator/new_password.html", errors=errors), 422
    db.session.commit()
    flash("Your new password is set.", "info")
    return _finish_sign_in(user)


def new_password_from_form() -> tuple[str, list[tuple[str, str]]]:
    """The new password typed twice, or the errors that stop it (the service checks strength)."""
    password = request.form.get("new_password", "")
    confirmation = request.form.get("confirm_password", "")
    if not password:
        return password, [("new_password", "Enter a new password.")]
    if password != confirmation:
        return password, [("confirm_password", "The two new passwords do not match.")]
    return password, []


def sentence(message: str) -> str:
    """A service's lower-case message as a sentence for the page."""
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


@bp.post("/logout")
@login_required()
def logout() -> ResponseReturnValue:
    user = current_user()
    assert user is not None  # nosec B101  # type narrowing; login_required guarantees it
    accounts.end_sessions(db.session(), user, actor=user.ref)
    db.session.commit()
    session.clear()
    flash("You have signed out.", "info")
    return redirect(url_for("coordinator.login"), 303)


# ---------------------------------------------------------------------------- enrolment


def totp_issuer() -> str:
    return accounts.totp_issuer(current_app.config["ORGANIZATION_NAME"])


def spaced_secret(secret: str) -> str:
    """Groups of four, as authenticator apps show them; easier to type by hand."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def qr_svg(uri: str) -> Markup:
    """The QR code as inline SVG: no script, no image request, nothing for the CSP to block."""
    svg = segno.make(uri, error="m").svg_inline(scale=5, svgclass="staff-qr", lineclass=None)
    label = 'role="img" aria-label="QR code for your authenticator app"'
    labelled = svg.replace("<svg ", f"<svg {label} ", 1)
    # segno's own markup: the URI is drawn as modules, never as text; the label is constant.
    return Markup(labelled)  # noqa: S704  # nosec B704
