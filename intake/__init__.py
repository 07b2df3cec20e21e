"""Intake: clinical-trial interest intake for oncology.

``create_app`` builds the app in a fixed order: settings → validation → keyring → extensions
→ surfaces (blueprints) → web plumbing (headers, errors, health) → CLI.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from intake import consent, ratelimit, web
from intake.config import ConfigError, is_production, load_settings, production_problems
from intake.database import configure_engine, engine_options
from intake.extensions import babel, csrf, db, limiter, migrate
from intake.keys import KEYRING_EXTENSION, FolderKeyProvider
from intake.sealing import Keyring, SealingError, staff_secret_files

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ("en", "es")

__all__ = ["ConfigError", "create_app"]

log = logging.getLogger("intake")


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    overrides = dict(test_config or {})
    instance_path = Path(
        overrides.pop("INSTANCE_PATH", None)
        or os.environ.get("INTAKE_INSTANCE_PATH")
        or PROJECT_ROOT / "instance"
    ).resolve()
    app = web.IntakeFlask(
        __name__,
        instance_path=str(instance_path),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    instance_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings = load_settings(instance_path, overrides=overrides)
    _configure_logging(settings["LOG_LEVEL"])
    key_provider = _load_key_provider(settings)
    _refuse_unsafe_production(app, settings, key_provider.get())
    app.config.update(_flask_config(settings))
    consent.init_app(app)  # refuses to start if the active authorization lacks an element
    app.extensions[KEYRING_EXTENSION] = key_provider
    if settings["TRUSTED_PROXIES"]:
        hops = settings["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]

    _init_extensions(app)
    _register_surfaces(app, settings["SURFACES"])
    web.init_app(app)
    if settings["SURFACES"] != "patient":
        from intake.coordinator.auth import install_staff_sessions

        install_staff_sessions(app)  # last: it wraps the session interface web.init_app set

    from intake.cli import register_commands

    register_commands(app)
    return app


def _configure_logging(level: str) -> None:
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(level.upper())


def _load_key_provider(settings: Mapping[str, Any]) -> FolderKeyProvider:
    """The patient surface never reads a private key file, even where one is present."""
    passphrase = settings.get("KEY_PASSPHRASE")
    try:
        return FolderKeyProvider(
            Path(settings["KEYS_DIR"]),
            with_private=settings["SURFACES"] != "patient",
            passphrase=passphrase.encode("utf-8") if passphrase else None,
        )
    except SealingError as error:
        raise ConfigError(f"INTAKE_KEYS_DIR: {error}") from error


def _refuse_unsafe_production(app: Flask, settings: Mapping[str, Any], keyring: Keyring) -> None:
    if not is_production(settings):
        return
    keys_dir = Path(settings["KEYS_DIR"])
    problems = production_problems(settings) + keyring.production_problems()
    problems += [
        f"INTAKE_KEYS_DIR: {path.name} is readable by group or others (chmod 600)"
        for path in staff_secret_files(keys_dir)
        if path.stat().st_mode & 0o077
    ]
    if settings["SURFACES"] == "patient":
        problems += [
            f"INTAKE_KEYS_DIR holds {path.name}, a staff-only key (private key or audit anchor "
            "key); a patient-surface server must hold public keys and the blind-index key only"
            for path in staff_secret_files(keys_dir)
        ]
    if app.debug:
        problems.append("FLASK_DEBUG is on; the debugger would show request data on errors")
    if settings["RATELIMIT_STORAGE_URI"].startswith("memory://"):
        log.warning("INTAKE_RATELIMIT_STORAGE_URI is memory://: each worker counts on its own")
    if problems:
        raise ConfigError("refusing to start in production:\n  - " + "\n  - ".join(problems))


def _flask_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    production = is_production(settings)
    secret = settings.get("SECRET_KEY")
    if not secret:
        log.debug("no SECRET_KEY yet; using a throwaway one until `flask dev init` writes one")
        secret = "dev-ephemeral-" + secrets.token_urlsafe(32)
    secure_cookies = bool(settings["SESSION_COOKIE_SECURE"])
    return {
        **{key: value for key, value in settings.items() if key != "KEY_PASSPHRASE"},
        "SECRET_KEY": secret,
        "SQLALCHEMY_DATABASE_URI": settings["DATABASE_URL"],
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(settings["DATABASE_URL"]),
        "SESSION_COOKIE_NAME": "__Host-intake" if secure_cookies else "intake",
        "SESSION_COOKIE_SECURE": secure_cookies,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "PREFERRED_URL_SCHEME": "https" if production else "http",
        # Flask 3.1 answers 400 to a request whose Host (or trusted X-Forwarded-Host) is not
        # listed, before routing: no redirect or link is ever built from an unlisted host.
        "TRUSTED_HOSTS": list(settings["TRUSTED_HOSTS"]) or None,
        "RATELIMIT_STORAGE_URI": ratelimit.storage_uri(settings["RATELIMIT_STORAGE_URI"]),
        "RATELIMIT_HEADERS_ENABLED": True,
        # If shared rate-limit storage is down, count in memory rather than refuse patients.
        "RATELIMIT_SWALLOW_ERRORS": True,
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "BABEL_DEFAULT_LOCALE": "en",
        "LANGUAGES": LANGUAGES,
        "BABEL_TRANSLATION_DIRECTORIES": str(Path(__file__).parent / "translations"),
    }


def select_locale() -> str:
    if request.path.startswith("/coordinator"):
        return "en"  # the staff pages are English-only for now
    requested = request.args.get("lang")
    if requested in LANGUAGES:
        return requested
    return request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]


def _init_extensions(app: Flask) -> None:
    db.init_app(app)
    with app.app_context():
        for engine in db.engines.values():
            configure_engine(engine)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    limiter.init_app(app)


def _register_surfaces(app: Flask, surfaces: str) -> None:
    if surfaces in ("all", "patient"):
        from intake.patient.views import bp as patient_bp

        app.register_blueprint(patient_bp)
    if surfaces in ("all", "coordinator"):
        from intake.coordinator.views import bp as coordinator_bp

        app.register_blueprint(coordinator_bp)
