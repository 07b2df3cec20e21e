"""Settings precedence, and production refusing each unsafe setting by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from intake import ConfigError, create_app
from intake.config import load_settings
from intake.sealing import (
    AUDIT_ANCHOR_KEY_FILE,
    ensure_audit_anchor_key,
    export_public_keys,
    generate_key,
)

SAFE_SECRET = "s" * 48
POSTGRES_URL = "postgresql+psycopg://intake@127.0.0.1:9/intake"


@pytest.fixture
def production(tmp_path: Path) -> dict[str, Any]:
    """A production configuration that passes every check; each test breaks one thing."""
    keys = tmp_path / "keys"
    generate_key(keys)
    return {
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "ENV": "production",
        "SECRET_KEY": SAFE_SECRET,
        "DATABASE_URL": POSTGRES_URL,
        "SESSION_COOKIE_SECURE": True,
        "TRUSTED_HOSTS": ("intake.example.org",),
        "KEYS_DIR": str(keys),
    }


def test_safe_production_settings_start(production: dict[str, Any]) -> None:
    app = create_app(production)
    assert app.config["SESSION_COOKIE_NAME"] == "__Host-intake"
    assert app.config["PREFERRED_URL_SCHEME"] == "https"


def _refusal(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        create_app(config)
    return str(caught.value)


def test_refuses_missing_secret(production: dict[str, Any]) -> None:
    production["SECRET_KEY"] = None
    assert "INTAKE_SECRET_KEY is not set" in _refusal(production)


def test_refuses_dev_secret(production: dict[str, Any]) -> None:
    production["SECRET_KEY"] = "dev-" + "x" * 40
    assert "INTAKE_SECRET_KEY is a development secret" in _refusal(production)


def test_refuses_short_secret(production: dict[str, Any]) -> None:
    production["SECRET_KEY"] = "too-short"
    assert "INTAKE_SECRET_KEY is shorter than 32" in _refusal(production)


def test_refuses_sqlite(production: dict[str, Any]) -> None:
    production["DATABASE_URL"] = "sqlite:////tmp/intake.sqlite3"
    assert "INTAKE_DATABASE_URL points at SQLite" in _refusal(production)


def test_refuses_default_database(production: dict[str, Any]) -> None:
    del production["DATABASE_URL"]
    assert "INTAKE_DATABASE_URL points at SQLite" in _refusal(production)


def test_refuses_insecure_cookies(production: dict[str, Any]) -> None:
    production["SESSION_COOKIE_SECURE"] = False
    assert "INTAKE_SESSION_COOKIE_SECURE must be true" in _refusal(production)


def test_refuses_no_trusted_hosts(production: dict[str, Any]) -> None:
    production["TRUSTED_HOSTS"] = ()
    assert "INTAKE_TRUSTED_HOSTS is not set" in _refusal(production)


def test_trusted_hosts_are_parsed_from_a_list(tmp_path: Path) -> None:
    environ = {"INTAKE_TRUSTED_HOSTS": "Intake.Example.org, staff.example.org .example.net"}
    settings = load_settings(tmp_path, environ=environ)
    assert settings["TRUSTED_HOSTS"] == ("intake.example.org", "staff.example.org", ".example.net")


def test_refuses_dev_keys(production: dict[str, Any], tmp_path: Path) -> None:
    dev_keys = tmp_path / "dev-keys"
    info = generate_key(dev_keys, dev=True)
    production["KEYS_DIR"] = str(dev_keys)
    message = _refusal(production)
    assert "INTAKE_KEYS_DIR holds development key" in message and info.key_id in message


def test_refuses_private_keys_on_a_patient_server(production: dict[str, Any]) -> None:
    production["SURFACES"] = "patient"
    message = _refusal(production)
    assert "a patient-surface server must hold public keys and the blind-index key only" in message


def test_refuses_the_audit_anchor_key_on_a_patient_server(
    production: dict[str, Any], tmp_path: Path
) -> None:
    """It signs the audit anchors: a patient host holding it could vouch for a rebuilt chain."""
    public = tmp_path / "public"
    export_public_keys(Path(production["KEYS_DIR"]), public)
    assert not (public / AUDIT_ANCHOR_KEY_FILE).exists()  # export-public leaves it behind
    production.update(SURFACES="patient", KEYS_DIR=str(public))
    assert create_app(production).config["SURFACES"] == "patient"
    ensure_audit_anchor_key(public)
    assert f"holds {AUDIT_ANCHOR_KEY_FILE}, a staff-only key" in _refusal(production)


def test_refuses_an_anchor_key_readable_by_others(production: dict[str, Any]) -> None:
    (Path(production["KEYS_DIR"]) / AUDIT_ANCHOR_KEY_FILE).chmod(0o640)
    assert f"{AUDIT_ANCHOR_KEY_FILE} is readable by group or others" in _refusal(production)


def test_all_problems_are_listed_at_once(production: dict[str, Any]) -> None:
    production.update(SECRET_KEY=None, DATABASE_URL="sqlite:///x.db", SESSION_COOKIE_SECURE=False)
    message = _refusal(production)
    for setting in ("INTAKE_SECRET_KEY", "INTAKE_DATABASE_URL", "INTAKE_SESSION_COOKIE_SECURE"):
        assert setting in message


PASSPHRASE = "kJ3vQ9-generated-passphrase-Zr7"


def test_refuses_a_keyring_it_cannot_decrypt(production: dict[str, Any], tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    generate_key(locked, passphrase=PASSPHRASE.encode())
    production["KEYS_DIR"] = str(locked)
    assert "INTAKE_KEYS_DIR" in _refusal(production)
    production["KEY_PASSPHRASE"] = PASSPHRASE
    app = create_app(production)
    assert app.config["ENV"] == "production"
    assert "KEY_PASSPHRASE" not in app.config  # templates can read config; the passphrase stays out


def test_refuses_a_short_passphrase(production: dict[str, Any], tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    generate_key(locked, passphrase=b"hunter2")
    production.update(KEYS_DIR=str(locked), KEY_PASSPHRASE="hunter2")
    assert "INTAKE_KEY_PASSPHRASE is shorter than 24" in _refusal(production)


def test_refuses_private_keys_readable_by_others(production: dict[str, Any]) -> None:
    for private in Path(production["KEYS_DIR"]).glob("*.private.pem"):
        private.chmod(0o644)
    assert "is readable by group or others" in _refusal(production)


def test_refuses_debug_mode(production: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_DEBUG", "1")
    assert "FLASK_DEBUG is on" in _refusal(production)


def test_development_tolerates_what_production_refuses(tmp_path: Path) -> None:
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/intake.sqlite3"
    assert app.config["SECRET_KEY"]
    assert app.config["SESSION_COOKIE_NAME"] == "intake"


def test_precedence_defaults_then_instance_file_then_environment(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'ORGANIZATION_NAME = "From file"\nLOG_LEVEL = "WARNING"\n'
    )
    settings = load_settings(tmp_path, environ={"INTAKE_ORGANIZATION_NAME": "From env"})
    assert settings["ORGANIZATION_NAME"] == "From env"
    assert settings["LOG_LEVEL"] == "WARNING"
    assert settings["MAX_CONTENT_LENGTH"] == 64 * 1024


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        ({"INTAKE_ENV": "staging"}, "INTAKE_ENV"),
        ({"INTAKE_SURFACES": "everything"}, "INTAKE_SURFACES"),
        ({"INTAKE_SESSION_COOKIE_SECURE": "maybe"}, "INTAKE_SESSION_COOKIE_SECURE"),
        ({"INTAKE_MAX_CONTENT_LENGTH": "lots"}, "INTAKE_MAX_CONTENT_LENGTH"),
        ({"INTAKE_LOG_LEVEL": "chatty"}, "INTAKE_LOG_LEVEL"),
        ({"INTAKE_TRUSTED_PROXIES": "one"}, "INTAKE_TRUSTED_PROXIES"),
        ({"INTAKE_TRUSTED_HOSTS": "https://intake.example.org"}, "INTAKE_TRUSTED_HOSTS"),
        ({"INTAKE_TRUSTED_HOSTS": "intake.example.org:443"}, "INTAKE_TRUSTED_HOSTS"),
        ({"INTAKE_TRUSTED_HOSTS": "*.example.org"}, "INTAKE_TRUSTED_HOSTS"),
        ({"INTAKE_TRUSTED_HOSTS": "intake.example.org/path"}, "INTAKE_TRUSTED_HOSTS"),
    ],
)
def test_bad_environment_values_name_the_setting(
    tmp_path: Path, environ: dict[str, str], setting: str
) -> None:
    with pytest.raises(ConfigError, match=setting):
        load_settings(tmp_path, environ=environ)


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ('SESSION_COOKIE_SECURE = "false"', "SESSION_COOKIE_SECURE", False),
        ("SESSION_COOKIE_SECURE = true", "SESSION_COOKIE_SECURE", True),
        ('MAX_CONTENT_LENGTH = "2048"', "MAX_CONTENT_LENGTH", 2048),
        ('LOG_LEVEL = "debug"', "LOG_LEVEL", "DEBUG"),
    ],
)
def test_instance_file_values_are_typed(
    tmp_path: Path, line: str, key: str, expected: object
) -> None:
    (tmp_path / "config.toml").write_text(line + "\n")
    assert load_settings(tmp_path, environ={})[key] == expected


@pytest.mark.parametrize("line", ['LOG_LEVEL = "loud"', 'SESSION_COOKIE_SECURE = "perhaps"'])
def test_bad_instance_file_values_name_the_setting(tmp_path: Path, line: str) -> None:
    (tmp_path / "config.toml").write_text(line + "\n")
    with pytest.raises(ConfigError, match=line.split()[0]):
        load_settings(tmp_path, environ={})


def test_unknown_setting_in_instance_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('SECRET_KEYY = "typo"\n')
    with pytest.raises(ConfigError, match="SECRET_KEYY"):
        load_settings(tmp_path, environ={})


def test_refuses_a_renamed_private_key_on_a_patient_server(
    production: dict[str, Any], tmp_path: Path
) -> None:
    keys = Path(production["KEYS_DIR"])
    public = tmp_path / "public"
    export_public_keys(keys, public)
    production.update(SURFACES="patient", KEYS_DIR=str(public))
    assert create_app(production).config["SURFACES"] == "patient"
    private = next(keys.glob("*.private.pem"))
    (public / "backup.bak").write_bytes(private.read_bytes())
    assert "backup.bak" in _refusal(production)


def test_wsgi_entry_point_defaults_to_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """gunicorn 'intake.wsgi:app' must not quietly run with development defaults."""
    import importlib
    import sys

    monkeypatch.setenv("INTAKE_INSTANCE_PATH", str(tmp_path))
    monkeypatch.delenv("INTAKE_ENV", raising=False)
    monkeypatch.delitem(sys.modules, "intake.wsgi", raising=False)
    with pytest.raises(ConfigError, match="refusing to start in production"):
        importlib.import_module("intake.wsgi")
