"""The floor: the least a Flask-WTF + SQLAlchemy form handler does to take one submission.

Same fields as the intake form, CSRF on (Flask-WTF, session cookie), one plain row per POST,
then a 303 to a confirmation page that only the sending session can open. No sealing, no
consent record, no audit trail, no rate limit, no translations, no idempotency: whatever
Intake costs above this is the price of those.

It gets the same SQLite pragmas as Intake (WAL, busy timeout, synchronous=NORMAL) and the
same PostgreSQL pool options, so the comparison measures the application, not the engine setup.
A single INSERT per transaction needs no ``BEGIN IMMEDIATE``.

    FLOOR_DATABASE_URL=sqlite:////tmp/floor.sqlite3 FLOOR_SECRET_KEY=... \\
        .venv/bin/python -m bench.floor_app init
    FLOOR_DATABASE_URL=... FLOOR_SECRET_KEY=... .venv/bin/gunicorn --no-control-socket \\
        --pid /tmp/floor.pid -w 4 -b 127.0.0.1:8001 'bench.floor_app:app'
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

from flask import Flask, abort, jsonify, redirect, render_template, session, url_for
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect
from jinja2 import DictLoader
from sqlalchemy import String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from wtforms import BooleanField, StringField
from wtforms.validators import DataRequired, Length, Optional


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
csrf = CSRFProtect()

TEXT_FIELDS = (
    "filler",
    "representative_authority",
    "cancer_type",
    "cancer_other",
    "birth_day",
    "birth_month",
    "birth_year",
    "full_name",
    "email",
    "phone",
    "postal_code",
    "country",
    "contact_method",
    "signature",
)
REQUIRED = {
    "filler",
    "cancer_type",
    "birth_day",
    "birth_month",
    "birth_year",
    "full_name",
    "country",
    "contact_method",
    "signature",
}


class FloorSubmission(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "floor_submissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    received_at: Mapped[datetime]
    filler: Mapped[str] = mapped_column(String(40))
    representative_authority: Mapped[str] = mapped_column(String(200))
    cancer_type: Mapped[str] = mapped_column(String(40))
    cancer_other: Mapped[str] = mapped_column(String(200))
    birth_day: Mapped[str] = mapped_column(String(4))
    birth_month: Mapped[str] = mapped_column(String(4))
    birth_year: Mapped[str] = mapped_column(String(6))
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str] = mapped_column(String(40))
    postal_code: Mapped[str] = mapped_column(String(20))
    country: Mapped[str] = mapped_column(String(2))
    contact_method: Mapped[str] = mapped_column(String(10))
    agree: Mapped[bool]
    signature: Mapped[str] = mapped_column(String(200))
    form_token: Mapped[str] = mapped_column(String(64))
    consent_version: Mapped[str] = mapped_column(String(40))
    consent_language: Mapped[str] = mapped_column(String(8))


class FloorForm(FlaskForm):  # type: ignore[misc]
    filler = StringField(validators=[DataRequired(), Length(max=40)])
    representative_authority = StringField(validators=[Optional(), Length(max=200)])
    cancer_type = StringField(validators=[DataRequired(), Length(max=40)])
    cancer_other = StringField(validators=[Optional(), Length(max=200)])
    birth_day = StringField(validators=[DataRequired(), Length(max=2)])
    birth_month = StringField(validators=[DataRequired(), Length(max=2)])
    birth_year = StringField(validators=[DataRequired(), Length(max=4)])
    full_name = StringField(validators=[DataRequired(), Length(max=200)])
    email = StringField(validators=[Optional(), Length(max=254)])
    phone = StringField(validators=[Optional(), Length(max=40)])
    postal_code = StringField(validators=[Optional(), Length(max=20)])
    country = StringField(validators=[DataRequired(), Length(max=2)])
    contact_method = StringField(validators=[DataRequired(), Length(max=10)])
    agree = BooleanField(validators=[DataRequired()])
    signature = StringField(validators=[DataRequired(), Length(max=200)])
    form_token = StringField(validators=[Optional(), Length(max=64)])
    consent_version = StringField(validators=[DataRequired(), Length(max=40)])
    consent_language = StringField(validators=[DataRequired(), Length(max=8)])


FORM_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Floor form</title></head><body>
<h1>Find out about cancer clinical trials</h1>
{% if form.errors %}<ul>{% for name, problems in form.errors.items() %}
<li><a href="#{{ name }}">{{ name }}: {{ problems[0] }}</a></li>{% endfor %}</ul>{% endif %}
<form method="post" action="{{ url_for('form') }}">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
  <input type="hidden" name="form_token" value="{{ form.form_token.data or '' }}">
  <input type="hidden" name="consent_version" value="floor-1">
  <input type="hidden" name="consent_language" value="en">
{% for name in text_fields %}
  <p><label for="{{ name }}">{{ name }}</label>
  <input id="{{ name }}" name="{{ name }}" type="text" value="{{ form[name].data or '' }}"></p>
{% endfor %}
  <p><input id="agree" name="agree" type="checkbox" value="y"><label for="agree">I agree</label></p>
  <button type="submit">Send</button>
</form></body></html>
"""
CONFIRMATION_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sent</title></head><body>
<h1>Thank you</h1><p>Your reference code <strong id="reference">{{ reference }}</strong></p>
</body></html>
"""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "busy_timeout=15000", "synchronous=NORMAL"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def create_app(database_url: str | None = None, secret_key: str | None = None) -> Flask:
    app = Flask(__name__)
    url = database_url or os.environ["FLOOR_DATABASE_URL"]
    app.config.update(
        SECRET_KEY=secret_key or os.environ.get("FLOOR_SECRET_KEY") or "floor-bench-secret-" * 2,
        SQLALCHEMY_DATABASE_URI=url,
        SQLALCHEMY_ENGINE_OPTIONS=(
            {"connect_args": {"timeout": 15}}
            if url.startswith("sqlite")
            else {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}
        ),
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.jinja_loader = DictLoader({"form.html": FORM_PAGE, "confirmation.html": CONFIRMATION_PAGE})
    db.init_app(app)
    csrf.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)

    @app.route("/", methods=["GET", "POST"])
    def form() -> Any:
        page = FloorForm()
        if not page.form_token.data:
            page.form_token.data = secrets.token_urlsafe(32)
        if not page.validate_on_submit():
            status = 422 if page.is_submitted() else 200
            return render_template("form.html", form=page, text_fields=TEXT_FIELDS), status
        values = {name: (getattr(page, name).data or "") for name in TEXT_FIELDS}
        row = FloorSubmission(
            reference=secrets.token_hex(4).upper(),
            received_at=datetime.now(UTC).replace(tzinfo=None),
            agree=True,
            form_token=page.form_token.data,
            consent_version=page.consent_version.data,
            consent_language=page.consent_language.data,
            **values,
        )
        db.session.add(row)
        db.session.commit()
        session["receipts"] = [*session.get("receipts", [])[-2:], row.reference]
        return redirect(url_for("confirmation", reference=row.reference), code=303)

    @app.get("/confirmation/<reference>")
    def confirmation(reference: str) -> str:
        if reference not in session.get("receipts", []):
            abort(404)
        return render_template("confirmation.html", reference=reference)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    return app


def init_db(database_url: str) -> None:
    """Create the one table (run once before starting workers)."""
    app = create_app(database_url, "init")
    with app.app_context():
        db.create_all()
        db.engine.dispose()


app = create_app() if os.environ.get("FLOOR_DATABASE_URL") else None

if __name__ == "__main__":
    if sys.argv[1:] != ["init"]:
        sys.exit("usage: FLOOR_DATABASE_URL=... python -m bench.floor_app init")
    init_db(os.environ["FLOOR_DATABASE_URL"])
    print("floor_submissions created")
