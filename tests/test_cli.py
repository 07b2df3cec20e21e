"""`flask dev init` (once, losing nothing when run again) and `flask users` (staff accounts)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select

from intake import create_app
from intake.cli import cli_actor
from intake.extensions import db
from intake.models import AuditEvent
from tests.factories import StaffAccount, login


def _dev_init(instance: Path) -> tuple[Result, str]:
    app = create_app({"INSTANCE_PATH": str(instance)})
    result = app.test_cli_runner().invoke(args=["dev", "init"])
    with app.app_context():
        actions = list(db.session.scalars(select(AuditEvent.action)))
        db.session.remove()
        db.engine.dispose()
    return result, ",".join(actions)


def test_dev_init_creates_everything_once(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    first, actions = _dev_init(instance)
    assert first.exit_code == 0, first.output
    assert "secret key: created" in first.output and "development key" in first.output
    assert actions == "keys.generated,users.created"  # the key, then the demo coordinator
    config = (instance / "config.toml").read_text()
    assert 'SECRET_KEY = "dev-' in config
    keys = sorted(p.name for p in (instance / "keys").iterdir())
    for path in [
        instance / "config.toml",
        instance / "intake.sqlite3",
        *(instance / "keys").iterdir(),
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    second, actions = _dev_init(instance)
    assert second.exit_code == 0, second.output
    assert "secret key: kept" in second.output and "keyring: kept" in second.output
    assert (instance / "config.toml").read_text() == config
    assert sorted(p.name for p in (instance / "keys").iterdir()) == keys
    assert actions == "keys.generated,users.created"


def test_dev_init_keeps_other_settings_in_the_instance_file(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.toml").write_text('ORGANIZATION_NAME = "Mercy Oncology"')
    result, _ = _dev_init(instance)
    assert result.exit_code == 0, result.output
    text = (instance / "config.toml").read_text()
    assert 'ORGANIZATION_NAME = "Mercy Oncology"' in text and "SECRET_KEY" in text
    assert (
        create_app({"INSTANCE_PATH": str(instance)}).config["ORGANIZATION_NAME"] == "Mercy Oncology"
    )


def test_dev_init_is_refused_in_production(tmp_path: Path) -> None:
    from intake.sealing import generate_key

    keys = tmp_path / "keys"
    generate_key(keys)
    app = create_app(
        {
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "ENV": "production",
            "SECRET_KEY": "p" * 40,
            "DATABASE_URL": "postgresql+psycopg://x@127.0.0.1:9/x",
            "SESSION_COOKIE_SECURE": True,
            "TRUSTED_HOSTS": ("localhost",),
            "KEYS_DIR": str(keys),
        }
    )
    result = app.test_cli_runner().invoke(args=["dev", "init"])
    assert result.exit_code != 0
    assert "refused in production" in result.output
    assert not (tmp_path / "instance" / "config.toml").exists()


# ---------------------------------------------------------------------------- users


def _audit_rows(app: Flask) -> list[AuditEvent]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def _create(runner: FlaskCliRunner, email: str, role: str = "coordinator") -> Result:
    return runner.invoke(
        args=["users", "create", email, "--role", role, "--password-stdin"],
        input="correct horse battery staple\n",
    )


def test_users_create_from_stdin_shows_no_secret(app: Flask, runner: FlaskCliRunner) -> None:
    """Whoever creates the account never learns its second factor: the owner makes it."""
    result = _create(runner, "Lee@Example.org", role="admin")
    assert result.exit_code == 0, result.output
    created = re.search(r"created (user:\d+) lee@example.org \(admin\)", result.output)
    assert created
    assert "otpauth://" not in result.output and "secret=" not in result.output
    assert "\u2580" not in result.output and "\u2588" not in result.output  # no QR either
    assert "replaces this first password" in result.output
    (event,) = _audit_rows(app)
    assert (event.action, event.actor, event.target) == ("users.created", cli_actor(), created[1])
    assert "lee" not in event.details


def test_users_create_prompts_twice_for_the_password(runner: FlaskCliRunner) -> None:
    result = runner.invoke(
        args=["users", "create", "kim@example.org", "--role", "auditor"],
        input="correct horse battery staple\ncorrect horse battery staple\n",
    )
    assert result.exit_code == 0, result.output
    assert "Repeat for confirmation" in result.output and "otpauth://" not in result.output
    assert "correct horse" not in result.output


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["bad-email", "--role", "admin"], "correct horse battery staple\n", "email address"),
        (["a@example.org", "--role", "admin"], "short\n", "at least 12 characters"),
        (["a@example.org", "--role", "owner"], "correct horse battery staple\n", "owner"),
    ],
)
def test_users_create_refuses_bad_input(
    runner: FlaskCliRunner, args: list[str], stdin: str, message: str
) -> None:
    result = runner.invoke(args=["users", "create", *args, "--password-stdin"], input=stdin)
    assert result.exit_code != 0 and message in result.output


def test_users_create_refuses_a_duplicate(runner: FlaskCliRunner) -> None:
    assert _create(runner, "dup@example.org").exit_code == 0
    result = _create(runner, "DUP@example.org")
    assert result.exit_code == 1 and "exists" in result.output


def test_users_list_disable_and_reset_2fa(app: Flask, runner: FlaskCliRunner) -> None:
    assert runner.invoke(args=["users", "list"]).output.startswith("no accounts")
    assert _create(runner, "ana@example.org").exit_code == 0
    listing = runner.invoke(args=["users", "list"]).output
    assert re.search(r"ana@example.org\s+coordinator\s+active\s+pending", listing)

    reset = runner.invoke(args=["users", "reset-2fa", "ANA@example.org"])
    assert reset.exit_code == 0, reset.output
    assert "otpauth://" not in reset.output and "shown only to them" in reset.output

    disabled = runner.invoke(args=["users", "disable", "ana@example.org"])
    assert disabled.exit_code == 0 and re.match(r"disabled user:\d+ ana@", disabled.output)
    again = runner.invoke(args=["users", "disable", "ana@example.org"])
    assert again.exit_code == 0 and "was disabled" in again.output
    assert "disabled" in runner.invoke(args=["users", "list"]).output

    unknown = runner.invoke(args=["users", "disable", "nobody@example.org"])
    assert unknown.exit_code == 1 and "no account" in unknown.output
    assert [e.action for e in _audit_rows(app)] == [
        "users.created",
        "users.totp_reset",
        "users.disabled",
    ]


def test_dev_init_demo_coordinator_can_sign_in(tmp_path: Path) -> None:
    """The README's promise: `make run` prints what signing in as the demo coordinator takes."""
    instance = tmp_path / "instance"
    result, _ = _dev_init(instance)
    assert "demo coordinator: created demo@example.org (admin)" in result.output
    password = re.search(r"password: (\S+)", result.output)
    assert password and "otpauth://" not in result.output
    again, _ = _dev_init(instance)
    assert "demo coordinator: kept" in again.output and password.group(1) not in again.output

    app = create_app({"INSTANCE_PATH": str(instance), "TESTING": True})
    client = app.test_client()
    demo = StaffAccount(1, "demo@example.org", "admin", password.group(1))
    login(client, demo)
    assert "demo@example.org" in client.get("/coordinator/users").get_data(as_text=True)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
