"""Staff pages. Access to each is declared with ``auth.login_required(...)``.

Unknown ``/coordinator/...`` paths go to sign-in for anonymous visitors and answer 404 to
signed-in staff, so the surface's shape is not visible before sign-in.
"""

from __future__ import annotations

from typing import NoReturn

from flask import abort, render_template
from flask.typing import ResponseReturnValue

from intake.coordinator import account, audit_view, auth, bp, charts, export, triage, users
from intake.coordinator.auth import current_user, login_required
from intake.triage import TRIAGE_ROLES

# Importing these modules registers their routes on bp.
__all__ = ["account", "audit_view", "auth", "bp", "charts", "export", "triage", "users"]


@bp.get("/")
@login_required()
def home() -> ResponseReturnValue:
    """The submissions list for those who triage; auditors get a page of what they may see."""
    user = current_user()
    if user is not None and user.role in TRIAGE_ROLES:
        return triage.list_page()
    return render_template("coordinator/home.html")


@bp.get("/<path:path>")
@login_required()
def unknown(path: str) -> NoReturn:
    abort(404)
