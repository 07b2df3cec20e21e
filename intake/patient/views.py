"""Public pages."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("patient", __name__)


@bp.get("/")
def index() -> str:
    return render_template("patient/index.html")
