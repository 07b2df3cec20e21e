"""What every response carries, health checks, and error pages that leak nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from intake.extensions import db
from tests.conftest import AppFactory

PAGES = ["/", "/healthz", "/readyz", "/no-such-page", "/static/intake.css", "/coordinator/"]


@pytest.mark.parametrize("path", PAGES)
def test_security_headers_on_every_response(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "http" not in csp  # no third-party origin anywhere
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in response.headers  # development serves plain HTTP


def test_dynamic_pages_are_not_cached_but_static_files_are(client: FlaskClient) -> None:
    assert client.get("/").headers["Cache-Control"] == "no-store"
    assert "no-store" not in client.get("/static/intake.css").headers.get("Cache-Control", "")


def test_production_sends_hsts(make_app: AppFactory, tmp_path: Path) -> None:
    from intake.sealing import generate_key

    keys = tmp_path / "prod-keys"
    generate_key(keys)
    app = make_app(
        ENV="production",
        SECRET_KEY="p" * 40,
        DATABASE_URL="postgresql+psycopg://x@127.0.0.1:9/x",
        SESSION_COOKIE_SECURE=True,
        TRUSTED_HOSTS=("localhost",),
        KEYS_DIR=str(keys),
    )
    response = app.test_client().get("/healthz", base_url="https://localhost")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=63072000")


def test_home_page_renders(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert '<html lang="en">' in body
    assert "<h1>" in body and "clinical trial" in body.lower()


def test_spanish_from_accept_language(client: FlaskClient) -> None:
    body = client.get("/", headers={"Accept-Language": "es-MX,es;q=0.9"}).get_data(as_text=True)
    assert '<html lang="es">' in body


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_when_ready(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready", "checks": {"database": "ok", "keys": "ok"}}


def test_readyz_without_keys(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app(KEYS_DIR=str(tmp_path / "empty"))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"] == {"database": "ok", "keys": "missing"}


def test_readyz_with_database_unreachable(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app(DATABASE_URL=f"sqlite:///{tmp_path}/missing-folder/db.sqlite3")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["database"] == "unreachable"


def test_not_found_is_a_friendly_page(client: FlaskClient) -> None:
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert "Page not found" in response.get_data(as_text=True)


def test_unexpected_error_leaks_nothing(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    marker = "PHI-MARKER-7731 jane@example.org"

    @app.get("/explode")
    def explode() -> str:
        raise ValueError(marker)

    app.config["TESTING"] = False  # let the error handler run, as in production
    app.config["PROPAGATE_EXCEPTIONS"] = False
    with caplog.at_level(logging.DEBUG):
        response = app.test_client().get("/explode")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert "Sorry, something went wrong" in body
    assert marker not in body and "Traceback" not in body
    assert marker not in caplog.text
    assert "ValueError" in caplog.text  # the log still says what failed, and where


def test_readyz_does_not_wait_for_a_writer(sqlite_app: Flask) -> None:
    """SQLite writers hold BEGIN IMMEDIATE; a read-only probe must still answer at once."""
    app = sqlite_app
    with app.app_context():
        writer = db.engine.connect()
        writer.exec_driver_sql("INSERT INTO audit_head VALUES (2, 0, 'x')")
        # The connection is now inside an IMMEDIATE transaction that holds the write lock.
        try:
            response = app.test_client().get("/readyz")
        finally:
            writer.rollback()
            writer.close()
    assert response.status_code == 200


@pytest.mark.parametrize(("trusted", "expected"), [(0, "127.0.0.1"), (1, "203.0.113.9")])
def test_client_address_behind_trusted_proxies(
    make_app: AppFactory, trusted: int, expected: str
) -> None:
    """Rate limits key on the client address: only trusted proxies may set it."""
    app = make_app(TRUSTED_PROXIES=trusted)

    @app.get("/whoami")
    def whoami() -> str:
        from flask import request

        return str(request.remote_addr)

    response = app.test_client().get("/whoami", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.get_data(as_text=True) == expected


HOSTILE = [
    "/?lang=%00",
    "/?lang=" + "e" * 5000,
    "/?lang=../../etc/passwd",
    "/" + "a" * 5000,
    "/static/../intake/config.py",
    "/static/%2e%2e/instance/config.toml",
    "/coordinator/%00",
    "/%ff%fe",
    "/<script>alert(1)</script>",
    "/healthz?x=' OR 1=1 --",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_hostile_urls_never_fail_or_leak(client: FlaskClient, path: str) -> None:
    response = client.get(path, headers={"Accept-Language": "xx-INVALID;;;q=abc, \x00"})
    assert response.status_code in {200, 303, 403, 404}  # 303: staff pages ask to sign in
    body = response.get_data()
    assert b"<script>alert" not in body
    assert b"SECRET_KEY" not in body and b"Traceback" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_unexpected_methods_are_refused_cleanly(client: FlaskClient, method: str) -> None:
    response = client.open("/", method=method, data=b"x" * 70_000)
    assert response.status_code in {400, 405, 413}
    assert "Content-Security-Policy" in response.headers


# ---------------------------------------------------------------------------- the Host header


@pytest.mark.parametrize("host", ["evil.example", "intake.example.org.evil.example", "localhost"])
def test_an_unlisted_host_gets_400_and_no_redirect_built_from_it(
    make_app: AppFactory, host: str
) -> None:
    """A slash redirect (and any link) would otherwise carry the attacker's host name."""
    app = make_app(TRUSTED_HOSTS=("intake.example.org",))
    client = app.test_client()
    for path in ("/coordinator", "/withdraw/", "/"):
        response = client.get(path, headers={"Host": host})
        assert response.status_code == 400, path
        assert host not in response.headers.get("Location", "")
        assert host not in response.get_data(as_text=True)


def test_listed_hosts_are_served_with_any_port(make_app: AppFactory) -> None:
    app = make_app(TRUSTED_HOSTS=("intake.example.org", "staff.example.org"))
    client = app.test_client()
    assert client.get("/", headers={"Host": "intake.example.org"}).status_code == 200
    redirect = client.get("/coordinator", headers={"Host": "staff.example.org:8443"})
    assert redirect.status_code == 308
    assert redirect.headers["Location"].startswith("http://staff.example.org:8443/coordinator/")


def test_forwarded_host_from_a_trusted_proxy_is_checked_too(make_app: AppFactory) -> None:
    app = make_app(TRUSTED_HOSTS=("intake.example.org",), TRUSTED_PROXIES=1)
    client = app.test_client()
    forged = {"Host": "intake.example.org", "X-Forwarded-Host": "evil.example"}
    assert client.get("/", headers=forged).status_code == 400
    good = {"Host": "10.0.0.5", "X-Forwarded-Host": "intake.example.org"}
    assert client.get("/", headers=good).status_code == 200
