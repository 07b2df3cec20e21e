"""Staff pages.

Coordinator accounts and sign-in are not built yet, so every staff URL is refused with 403:
deny by default, never an open dashboard.
"""

from __future__ import annotations

from typing import NoReturn

from flask import Blueprint, abort

bp = Blueprint("coordinator", __name__, url_prefix="/coordinator")


@bp.get("/", defaults={"path": ""})
@bp.get("/<path:path>")
def closed(path: str) -> NoReturn:
    abort(403)
