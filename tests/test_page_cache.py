"""Pages from the page cache (the first visit's form, the confirmation) equal full renderings."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest
from flask import Flask, render_template
from flask import session as flask_session
from flask_babel import format_date, format_datetime

from intake import consent
from intake.patient import views
from intake.patient.forms import IntakeForm
from intake.patient.page_cache import CACHE_EXTENSION, cached_page, split_at
from tests.conftest import AppFactory
from tests.patient_helpers import hidden_fields, send, valid_answers

HOSTILE_REFERRER = 'https://news.example.org/a"><script>alert(1)</script>?x=1'


@pytest.fixture
def app(make_sqlite_app: AppFactory) -> Flask:
    return make_sqlite_app(EMBED_ORIGINS=("https://news.example.org",))


def full_rendering(app: Flask, path: str, fields: Mapping[str, str], **headers: str) -> str:
    """The page as the template renders it, given the tokens the cached page was filled with."""
    with app.test_request_context(path, headers=headers):
        app.preprocess_request()
        form = IntakeForm()
        form.form_token.data = fields["form_token"]
        form.source.data = fields["source"]
        page, _status = views._render_form(
            form, embedded=path.startswith("/embed"), csrf_token=lambda: fields["csrf_token"]
        )
        return page


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/", {}),
        ("/?lang=es", {}),
        ("/?lang=en&source=spring-newsletter", {}),
        ("/embed?source=breast-cancer-article", {}),
        ("/embed?lang=es", {"Referer": "https://news.example.org/stories/lung?id=7"}),
        ("/", {"Referer": HOSTILE_REFERRER}),
        ("/", {"Accept-Language": "es-MX,es;q=0.9"}),
    ],
)
def test_cached_first_visit_equals_a_full_rendering(
    app: Flask, path: str, headers: dict[str, str]
) -> None:
    first = app.test_client().get(path, headers=headers)
    second = app.test_client().get(path, headers=headers)  # from the cache
    assert first.status_code == second.status_code == 200
    assert app.extensions[CACHE_EXTENSION], "the page was not cached"
    for response in (first, second):
        page = response.get_data(as_text=True)
        assert page == full_rendering(app, path, hidden_fields(page), **headers)
    assert "<script>alert" not in second.get_data(as_text=True)


def test_every_first_visit_gets_its_own_tokens(app: Flask) -> None:
    pages = [hidden_fields(app.test_client().get("/").get_data(as_text=True)) for _ in range(3)]
    assert len({page["form_token"] for page in pages}) == 3
    assert len({page["csrf_token"] for page in pages}) == 3
    assert all(len(page["form_token"]) >= 32 for page in pages)


def test_languages_and_endpoints_are_cached_apart(app: Flask) -> None:
    english = app.test_client().get("/").get_data(as_text=True)
    spanish = app.test_client().get("/?lang=es").get_data(as_text=True)
    embedded = app.test_client().get("/embed").get_data(as_text=True)
    assert '<html lang="en">' in english
    assert '<html lang="es">' in spanish
    assert 'class="embedded"' in embedded and 'class="embedded"' not in english
    assert len(app.extensions[CACHE_EXTENSION]) == 3


def confirmation_rendering(app: Flask, client: Any, path: str) -> str:
    """The confirmation page as the template renders it, for the same session."""
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    with app.test_request_context(path, headers={"Cookie": f"{cookie.key}={cookie.value}"}):
        app.preprocess_request()
        receipt = flask_session["receipts"][path.split("/")[-1].split("?")[0]]
        text = consent.signed_text(receipt["version"], receipt["language"])
        signed_at = datetime.fromisoformat(receipt["signed_at"])
        return render_template(
            "patient/confirmation.html",
            reference=path.split("/")[-1].split("?")[0],
            withdrawal_code=receipt["code"],
            consent_text=text,
            signed_on=format_datetime(signed_at, "medium"),
            ends_on=format_date(text.expires_at(signed_at), "long"),
            embedded=path.startswith("/embed"),
            contact_within_days=app.config["CONTACT_WITHIN_DAYS"],
        )


@pytest.mark.parametrize("form_path", ["/", "/?lang=es", "/embed?lang=es", "/embed"])
def test_cached_confirmation_equals_a_full_rendering(app: Flask, form_path: str) -> None:
    pages = []
    for marker in ("FIRST", "SECOND"):  # the second comes from the cache
        client = app.test_client()
        answer = send(client, valid_answers(marker), path=form_path)
        assert answer.status_code == 303
        location = answer.headers["Location"]
        page = client.get(location)
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert html == confirmation_rendering(app, client, location)
        pages.append(html)
    assert pages[0] != pages[1]  # each shows its own reference and code


def test_a_page_missing_a_placeholder_is_rendered_whole_every_time(app: Flask) -> None:
    calls: list[Mapping[str, str]] = []

    def render(values: Mapping[str, str]) -> str:
        calls.append(values)
        return f"<p>{values['csrf_token']} {values['csrf_token']}</p>"  # no form_token

    values = {"csrf_token": "c<1>", "form_token": "t"}
    with app.test_request_context("/"):
        assert cached_page(("k",), values, render) == "<p>c<1> c<1></p>"
        assert cached_page(("k",), values, render) == "<p>c<1> c<1></p>"
    assert len(calls) == 3  # once with placeholders (not cacheable), then whole each time


def test_split_fills_every_occurrence_in_page_order_and_escapes() -> None:
    page = split_at("a[S]b[C]c[F]d[S]", {"csrf_token": "[C]", "form_token": "[F]", "source": "[S]"})
    assert page is not None
    filled = page.fill({"csrf_token": "1", "form_token": "2", "source": '"><x'})
    assert filled == "a&#34;&gt;&lt;xb1c2d&#34;&gt;&lt;x"
    assert split_at("no holes here", {"csrf_token": "[C]"}) is None
