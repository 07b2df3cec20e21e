"""Staff pages. Access to each is declared with ``auth.login_required(...)``.

Unknown ``/coordinator/...`` paths go to sign-in for anonymous visitors and answer 404 to
signed-in staff, so the surface's shape is not visible before sign-in.
"""

from __future__ import annotations

from typing import NoReturn

from flask import abort, render_template

from intake.coordinator import auth, bp, users
from intake.coordinator.auth import login_required

__all__ = ["auth", "bp", "users"]  # importing auth and users registers their routes on bp


@bp.get("/")
@login_required()
def home() -> str:
    return render_template("coordinator/home.html")


@bp.get("/<path:path>")
@login_required()
def unknown(path: str) -> NoReturn:
    abort(404)
