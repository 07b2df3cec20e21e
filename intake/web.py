"""Web plumbing shared by both surfaces: security headers, error pages, health checks, logging.

Nothing here ever writes a request body, a form value or an exception message to the log:
exception messages can carry user input, so only the type and the stack frames are logged.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

from flask import (
    Flask,
    Response,
    current_app,
    g,
    has_request_context,
    jsonify,
    render_template,
    request,
)
from flask.sessions import SecureCookieSessionInterface
from flask_babel import get_locale, get_translations
from flask_babel import lazy_gettext as _l
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, SecurityError

from intake.config import is_production
from intake.database import read_only
from intake.extensions import db
from intake.keys import current_keyring, is_retired

log = logging.getLogger("intake.web")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'; frame-ancestors {frame_ancestors}"
)
STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
HSTS = "max-age=63072000; includeSubDomains"
ERROR_MESSAGES = {
    400: (_l("Something went wrong with that request"), _l("Please go back and try again.")),
    403: (
        _l("You do not have access to this page"),
        _l("Sign in with an account that may see it."),
    ),
    404: (_l("Page not found"), _l("Check the address, or start again from the home page.")),
    405: (_l("That action is not allowed here"), _l("Please go back and try again.")),
    413: (_l("What you sent is too large"), _l("Please shorten it and try again.")),
    429: (_l("Too many attempts"), _l("Please wait a few minutes, then try again.")),
    500: (
        _l("Sorry, something went wrong on our side"),
        _l("Nothing you sent was stored. Please try again later."),
    ),
    503: (_l("The service is unavailable right now"), _l("Please try again in a few minutes.")),
}


class IntakeFlask(Flask):
    def log_exception(self, exc_info: Any) -> None:
        """Log the exception type and frames, never its message (it may quote user input)."""
        exc_type, _exc, tb = exc_info if exc_info and exc_info[0] else sys.exc_info()
        frames = "".join(traceback.format_tb(tb))
        name = exc_type.__name__ if exc_type else "Exception"
        self.logger.error(
            "unhandled %s on %s %s\n%s", name, request.method, request.url_rule, frames
        )


class IntakeSessionInterface(SecureCookieSessionInterface):
    """Session cookies that still work inside another site's iframe, on the embed pages only.

    Browsers drop SameSite=Lax cookies in a cross-site frame, which would break the embedded
    form's CSRF check and its confirmation. There the cookie is SameSite=None, Secure and
    Partitioned (CHIPS): kept per embedding site, never shared across sites.
    """

    def get_cookie_samesite(self, app: Flask) -> str | None:
        return "None" if _embedded() else super().get_cookie_samesite(app)

    def get_cookie_secure(self, app: Flask) -> bool:
        return True if _embedded() else super().get_cookie_secure(app)

    def get_cookie_partitioned(self, app: Flask) -> bool:
        return True if _embedded() else super().get_cookie_partitioned(app)


class _WithoutClientAddress(logging.Filter):
    """Flask-Limiter names the client's address when a limit bites; an IP address identifies.

    The line stays (operators want to see limits biting); the address becomes ``client``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        address = request.remote_addr if has_request_context() else None
        if address and isinstance(record.args, tuple):
            record.args = tuple("client" if arg == address else arg for arg in record.args)
        return True


_without_client_address = _WithoutClientAddress()


def _embedded() -> bool:
    return bool(has_request_context() and g.get("embedded"))


def allow_framing(origins: str) -> None:
    """Let this response be framed by ``origins`` (a CSP source list); the default is 'none'."""
    g.frame_ancestors = origins


def set_security_headers(response: Response) -> Response:
    frame_ancestors = g.get("frame_ancestors", "'none'")
    response.headers["Content-Security-Policy"] = CSP.format(frame_ancestors=frame_ancestors)
    if frame_ancestors == "'none'":
        response.headers["X-Frame-Options"] = "DENY"
    for name, value in STATIC_HEADERS.items():
        response.headers.setdefault(name, value)
    if is_production(current_app.config):
        response.headers["Strict-Transport-Security"] = HSTS
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")
    response.headers["Vary"] = "Cookie, Accept-Language"
    return response


def _error_page(code: int) -> tuple[str, int]:
    title, message = ERROR_MESSAGES.get(code, ERROR_MESSAGES[400])
    return render_template("errors/error.html", code=code, title=title, message=message), code


def render_error(error: HTTPException) -> tuple[str, int] | Response:
    if _untrusted_host():
        # No page: links on it would be built from the very host name that was refused.
        return Response("Unknown host.\n", 400, mimetype="text/plain")
    return _error_page(error.code or 500)


def _untrusted_host() -> bool:
    """The request named a host outside ``INTAKE_TRUSTED_HOSTS`` (Flask refused to route it)."""
    return isinstance(request.routing_exception, SecurityError)


def render_unexpected(error: Exception) -> tuple[str, int]:
    db.session.rollback()
    current_app.log_exception(sys.exc_info())
    return _error_page(500)


def refuse_unbounded_bodies() -> None:
    """A body sent without a length (chunked) must stay under MAX_CONTENT_LENGTH too.

    Werkzeug stops reading such a body at the limit without an error, so the form would be
    parsed from its first bytes and the rest dropped. Read it here, at most up to the limit,
    and answer 413 when it reaches the limit, as a body with a too-large Content-Length gets.
    """
    if request.content_length is not None or "Transfer-Encoding" not in request.headers:
        return
    request.get_data(cache=True)  # reads at most MAX_CONTENT_LENGTH bytes
    if getattr(request.stream, "is_exhausted", False):
        raise RequestEntityTooLarge()


def healthz() -> Response:
    """The process is alive. Touches nothing else, so it stays cheap."""
    return jsonify(status="ok")


def readyz() -> tuple[Response, int]:
    """Ready to serve: the database answers and the keyring can do this surface's job."""
    checks = {"database": "ok", "keys": "ok"}
    keyring = current_keyring()
    retired = False
    try:
        read_only(db.session())  # a probe must never queue behind writers
        db.session.execute(text("SELECT 1"))
        retired = keyring.ready and is_retired(db.session(), keyring.sealing_key_id)
    except SQLAlchemyError:
        checks["database"] = "unreachable"
    finally:
        db.session.rollback()
    if not keyring.ready:
        checks["keys"] = "missing"
    elif retired:
        checks["keys"] = "retired"  # this host still seals to a retired key: copy the new one
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503


def _gettext_with(translations: Any) -> Any:
    """Jinja's new-style ``gettext`` (as Flask-Babel installs it) over one catalog."""

    @pass_context
    def gettext(context: Context, string: str, /, **variables: Any) -> str:
        text: str = translations.ugettext(string)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704  # nosec B704  # our own catalog, as Jinja's i18n does
        return text % variables  # Markup % escapes the variables, as Jinja's own does

    return gettext


def _ngettext_with(translations: Any) -> Any:
    """Jinja's new-style ``ngettext`` (as Flask-Babel installs it) over one catalog."""

    @pass_context
    def ngettext(
        context: Context, singular: str, plural: str, num: int, /, **variables: Any
    ) -> str:
        variables.setdefault("num", num)
        text: str = translations.ungettext(singular, plural, num)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704  # nosec B704  # our own catalog, as Jinja's i18n does
        return text % variables  # Markup % escapes the variables, as Jinja's own does

    return ngettext


def bind_translations() -> dict[str, Any]:
    """Look the catalog up once per render, not once per ``_()`` in the template.

    Flask-Babel's template globals find the request's catalog on every call (three lookups
    of ``g`` each); a page like the patient form makes about 35 calls. The catalog cannot
    change during a render, so the context gets ``gettext``/``ngettext`` bound to it (macros
    imported without context keep using the globals, which give the same text).
    """
    translations = get_translations()
    return {"gettext": _gettext_with(translations), "ngettext": _ngettext_with(translations)}


def init_app(app: Flask) -> None:
    logging.getLogger("flask-limiter").addFilter(_without_client_address)
    app.session_interface = IntakeSessionInterface()
    app.after_request(set_security_headers)
    # First of all hooks: CSRFProtect's, registered earlier, would read a truncated form.
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_unbounded_bodies)
    app.register_error_handler(HTTPException, render_error)
    app.register_error_handler(Exception, render_unexpected)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.add_url_rule("/readyz", "readyz", readyz)
    app.jinja_env.globals["get_locale"] = get_locale
    app.context_processor(bind_translations)
