"""/embed: the same form for another site's iframe; every other page stays unframeable."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from intake import ConfigError
from intake.config import load_settings
from tests.conftest import AppFactory
from tests.patient_helpers import hidden_fields, open_form, send, valid_answers
from tests.test_patient_flow import (
    CODE,
    REFERENCE,
    assert_kept,
    cookie_name,
    submissions,
)

NEWS = "https://news.example.org"


@pytest.fixture
def embed_app(make_app: AppFactory) -> Flask:
    return make_app(EMBED_ORIGINS=(NEWS,))


def frame_ancestors(response: TestResponse) -> str:
    policy = response.headers["Content-Security-Policy"]
    [directive] = [d.strip() for d in policy.split(";") if "frame-ancestors" in d]
    return directive.removeprefix("frame-ancestors ").strip()


def assert_frameable_by_news(response: TestResponse) -> None:
    assert frame_ancestors(response) == NEWS
    assert "X-Frame-Options" not in response.headers


def assert_unframeable(response: TestResponse) -> None:
    assert frame_ancestors(response) == "'none'"
    assert response.headers["X-Frame-Options"] == "DENY"


def session_cookie_header(response: TestResponse, app: Flask) -> str:
    [header] = [
        value
        for value in response.headers.getlist("Set-Cookie")
        if value.startswith(cookie_name(app) + "=")
    ]
    return header


def test_only_the_embed_pages_can_be_framed(embed_app: Flask) -> None:
    client = embed_app.test_client()
    embed = client.get("/embed")
    assert embed.status_code == 200
    assert_frameable_by_news(embed)
    for path in ("/", "/withdraw", "/withdraw/done", "/confirmation/ZZZZ-ZZZZ", "/no-such-page"):
        assert_unframeable(client.get(path))
    assert_unframeable(client.post("/", data={}))  # CSRF refusal re-renders the form
    assert client.get("/embed/confirmation/ZZZZ-ZZZZ").status_code == 404


def test_embed_without_configured_origins_is_not_frameable(app: Flask) -> None:
    assert_unframeable(app.test_client().get("/embed"))


def test_embedded_form_has_minimal_chrome_and_stays_embedded(embed_app: Flask) -> None:
    client = embed_app.test_client()
    full_page = client.get("/").get_data(as_text=True)
    assert 'class="site-name"' in full_page and 'class="site-footer"' in full_page

    page = client.get("/embed").get_data(as_text=True)
    assert 'class="site-name"' not in page and 'class="site-footer"' not in page
    assert '<body class="embedded">' in page
    assert 'action="/embed?lang=en"' in page

    response = send(client, valid_answers(), path="/embed")
    assert response.status_code == 303
    location = response.headers["Location"]
    [row] = submissions(embed_app)
    assert location == f"/embed/confirmation/{row.reference}?lang=en"
    confirmation = client.get(location)
    assert confirmation.status_code == 200
    assert_frameable_by_news(confirmation)
    text = confirmation.get_data(as_text=True)
    assert 'class="site-name"' not in text
    reference, code = REFERENCE.search(text), CODE.search(text)
    assert reference is not None and reference.group(1) == row.reference
    assert code is not None
    # The withdraw link leaves the frame (that page refuses framing).
    assert 'target="_blank" rel="noopener"' in text
    # The embedded confirmation is as private as the other one.
    assert embed_app.test_client().get(location).status_code == 404


def test_embedded_refusals_keep_the_form_inside_the_frame(make_app: AppFactory) -> None:
    app = make_app(EMBED_ORIGINS=(NEWS,), SUBMIT_RATE_LIMIT="1 per day")
    client = app.test_client()
    hidden = open_form(client, "/embed")
    answers = valid_answers()
    expired = client.post("/embed", data={**hidden, **answers, "csrf_token": "stale"})
    assert expired.status_code == 422
    assert_frameable_by_news(expired)
    assert_kept(expired.get_data(as_text=True), answers)
    fresh = hidden_fields(expired.get_data(as_text=True))
    assert send(client, answers, path="/embed", hidden=fresh).status_code == 303
    limited = send(client, valid_answers("LATER"), path="/embed")
    assert limited.status_code == 429
    assert_frameable_by_news(limited)
    assert 'class="site-name"' not in limited.get_data(as_text=True)


def test_session_cookie_works_inside_another_sites_frame(embed_app: Flask) -> None:
    client = embed_app.test_client()
    embedded = session_cookie_header(client.get("/embed"), embed_app)
    assert "SameSite=None" in embedded
    assert "Secure" in embedded.split("; ")
    assert "Partitioned" in embedded.split("; ")
    assert "HttpOnly" in embedded.split("; ")

    other = embed_app.test_client()
    plain = session_cookie_header(other.get("/"), embed_app)
    assert "SameSite=Lax" in plain
    assert "Partitioned" not in plain and "Secure" not in plain.split("; ")

    # And the embedded form's confirmation is reached with that cookie.
    response = send(client, valid_answers(), path="/embed")
    assert "SameSite=None" in session_cookie_header(response, embed_app)
    assert client.get(response.headers["Location"]).status_code == 200


# ---------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "value",
    [
        "*",
        "https://*.example.org",
        "https://news.example.org/health",
        "https://news.example.org/?x=1",
        "https://news.example.org#top",
        "ftp://news.example.org",
        "javascript:alert(1)",
        "news.example.org",
        "'self'",
        "'none'",
        "https://news.example.org;script-src",
        "https://news.example.org 'unsafe-inline'",
        "https://user@news.example.org",
        "https://news.example.org:99999",
        "https://news.example.org:",
    ],
)
def test_bad_embed_origins_are_refused_by_name(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="INTAKE_EMBED_ORIGINS"):
        load_settings(tmp_path, environ={"INTAKE_EMBED_ORIGINS": value})


def test_bad_embed_origins_in_the_instance_file_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('EMBED_ORIGINS = ["https://news.example.org", "*"]\n')
    with pytest.raises(ConfigError, match="EMBED_ORIGINS"):
        load_settings(tmp_path, environ={})


def test_embed_origins_are_parsed_into_bare_origins(tmp_path: Path) -> None:
    environ = {"INTAKE_EMBED_ORIGINS": "https://News.Example.org/, http://localhost:8000"}
    settings = load_settings(tmp_path, environ=environ)
    assert settings["EMBED_ORIGINS"] == ("https://news.example.org", "http://localhost:8000")
    assert load_settings(tmp_path, environ={})["EMBED_ORIGINS"] == ()


def test_an_oversized_body_on_the_embed_stays_visible_in_the_frame(embed_app: Flask) -> None:
    client = embed_app.test_client()
    hidden = open_form(client, "/embed")
    too_big = client.post("/embed", data={**hidden, "full_name": "x" * 70_000})
    assert too_big.status_code == 413
    assert_frameable_by_news(too_big)
    assert_unframeable(client.post("/", data={**hidden, "full_name": "x" * 70_000}))
