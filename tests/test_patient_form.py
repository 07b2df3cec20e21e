"""The patient form over real HTTP, CSRF on: what a person sees when they get something wrong,
what is stored when they get it right, and that no input, however hostile, breaks either.

The large matrix of bad inputs runs on SQLite only (the database only has to stay empty);
a representative subset, and every stored good case, runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
import shutil
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from intake.extensions import db
from intake.keys import current_keyring
from intake.models import AuditEvent, Submission
from intake.patient.validation import printable, years_before
from intake.submissions import open_submission
from tests.conftest import AppFactory, Database
from tests.patient_helpers import error_links, open_form, send, today, valid_answers

# The order questions appear in on the page, which the error summary must follow.
PAGE_ORDER = (
    "filler",
    "representative_authority",
    "cancer_type",
    "cancer_other",
    "birthday",
    "full_name",
    "email",
    "phone",
    "postal_code",
    "country",
    "contact_method",
    "agree",
    "signature",
)
TEXT_FIELDS = (
    "representative_authority",
    "cancer_other",
    "birth_day",
    "birth_month",
    "birth_year",
    "full_name",
    "email",
    "phone",
    "postal_code",
    "signature",
)
# The controls each question is made of: what its error-summary link and aria attributes use.
CONTROLS = {
    "filler": ("filler-self", "filler-parent", "filler-representative"),
    "birthday": ("birth_day", "birth_month", "birth_year"),
    "contact_method": ("contact_method-email", "contact_method-phone", "contact_method-text"),
}
RADIO_GROUPS = {"filler", "contact_method"}
UNDER_18 = "parent, guardian or legal representative"
SQL_OR = "' OR 1=1 --"
SQL_DROP = "Robert'); DROP TABLE submissions;--"
SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><script>alert(1)</script>'
RLO = "\u202e"


# ---------------------------------------------------------------------------- reading a page

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass(eq=False)
class Node:
    tag: str
    attrs: dict[str, str]
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)

    def ancestors(self) -> Iterator[Node]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class Page(HTMLParser):
    """Just enough of a DOM to ask what a browser would show: values, ids, ARIA."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self._open = self.root
        self.feed(html)
        self.close()
        self.nodes = list(self.root.walk())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {key: value or "" for key, value in attrs}, self._open)
        self._open.children.append(node)
        if tag not in VOID:
            self._open = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open.children.append(Node(tag, {k: v or "" for k, v in attrs}, self._open))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self._open
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self._open = node.parent

    def handle_data(self, data: str) -> None:
        self._open.text += data

    def by_id(self, element_id: str) -> Node:
        found = [node for node in self.nodes if node.attrs.get("id") == element_id]
        assert len(found) == 1, f"{len(found)} elements with id={element_id!r}"
        return found[0]

    def ids(self) -> Counter[str]:
        return Counter(node.attrs["id"] for node in self.nodes if "id" in node.attrs)

    def first(self, tag: str) -> Node:
        return next(node for node in self.nodes if node.tag == tag)

    def shown(self) -> dict[str, str]:
        """What the form shows in each field: typed text, the ticked radio, the chosen option."""
        values: dict[str, str] = {}
        for node in self.by_id("intake-form").walk():
            name, kind = node.attrs.get("name", ""), node.attrs.get("type", "text")
            if node.tag == "input" and kind in {"text", "email", "tel"} and name != "website":
                values[name] = node.attrs.get("value", "")
            elif node.tag == "input" and kind in {"radio", "checkbox"} and "checked" in node.attrs:
                values[name] = node.attrs["value"]
            elif node.tag == "textarea":
                values[name] = node.all_text()
            elif node.tag == "select":
                chosen = [
                    option.attrs["value"]
                    for option in node.walk()
                    if option.tag == "option" and "selected" in option.attrs
                ]
                assert len(chosen) <= 1, f"{name}: {chosen}"
                values[name] = chosen[0] if chosen else ""
        return values


def stored(app: Flask) -> tuple[int, int]:
    """Rows in submissions and audit_events, read through the app's own session."""
    with app.app_context():
        submissions = db.session.scalar(select(func.count()).select_from(Submission))
        events = db.session.scalar(select(func.count()).select_from(AuditEvent))
    return int(submissions or 0), int(events or 0)


def first(value: str | list[str]) -> str:
    return value[0] if isinstance(value, list) else value


def answers_with(overrides: dict[str, Any]) -> dict[str, Any]:
    """valid_answers() with overrides; None leaves a field out of the POST entirely."""
    answers: dict[str, Any] = valid_answers()
    for name, value in overrides.items():
        if value is None:
            answers.pop(name, None)
        else:
            answers[name] = value
    return answers


def anchor(name: str, answers: dict[str, Any]) -> str:
    if name == "birthday":  # the first part left empty, else the day
        for part in CONTROLS["birthday"]:
            if not first(answers.get(part) or "").strip():
                return part
        return "birth_day"
    return CONTROLS[name][0] if name in CONTROLS else name


def birthday(day: date) -> dict[str, str]:
    return {"birth_day": str(day.day), "birth_month": str(day.month), "birth_year": str(day.year)}


def years_ago(years: int, days: int = 0) -> date:
    return years_before(today(), years) + timedelta(days=days)


# ---------------------------------------------------------------------------- bad inputs


def bad(errors: str, case_id: str, **overrides: Any) -> Any:
    return pytest.param(overrides, tuple(errors.split()), id=case_id)


TEN_THOUSAND = "A" * 10_000
BAD_INPUTS = [
    # empty and whitespace
    bad(
        "filler cancer_type birthday full_name email postal_code country contact_method agree "
        "signature",
        "everything-empty",
        **dict.fromkeys(valid_answers(), ""),
    ),
    bad(  # a missing country is the default, the United States, as the page first shows
        "filler cancer_type birthday full_name email postal_code contact_method agree signature",
        "nothing-sent-at-all",
        **dict.fromkeys(valid_answers()),
    ),
    bad("full_name", "name-whitespace", full_name="   \t  "),
    bad("signature", "signature-whitespace", signature="\u00a0 \u3000"),
    bad("email", "email-whitespace-contact-by-email", email="    "),
    bad("postal_code", "postal-whitespace", postal_code="  "),
    bad("birthday", "birthday-whitespace", birth_day=" ", birth_month=" ", birth_year=" "),
    bad("birthday", "birthday-no-day", birth_day=""),
    bad("birthday", "birthday-no-month", birth_month=""),
    bad("birthday", "birthday-no-year", birth_year=""),
    # boundaries of age and date
    bad("filler", "born-today-as-self", **birthday(today())),
    bad("filler", "17y364d-as-self", **birthday(years_ago(18, days=1))),
    bad("birthday", "120y-and-a-day", **birthday(years_ago(120, days=-1))),
    bad("birthday", "born-tomorrow", **birthday(today() + timedelta(days=1))),
    bad("birthday", "31-february", birth_day="31", birth_month="2", birth_year="1980"),
    bad("birthday", "29-february-not-leap", birth_day="29", birth_month="2", birth_year="1983"),
    bad("birthday", "two-digit-year", birth_year="68"),
    bad("birthday", "arabic-indic-digits", birth_day="\u0661\u0664", birth_month="\u0667"),
    bad("birthday", "day-of-thirty-nines", birth_day="9" * 30),
    # NUL bytes
    bad("full_name", "nul-name", full_name="Ana\x00López"),
    bad("email", "nul-email", email="ana\x00@example.org"),
    bad("phone", "nul-phone", phone="415\x00555 2671", contact_method="phone"),
    bad("postal_code", "nul-postal", postal_code="94\x00110"),
    bad("signature", "nul-signature", signature="\x00"),
    bad("birthday", "nul-birth-day", birth_day="1\x004"),
    bad("cancer_other", "nul-cancer-other", cancer_type="other_not_sure", cancer_other="a\x00b"),
    # 10,000-character fields
    bad("full_name", "long-name", full_name=TEN_THOUSAND),
    bad("email", "long-email", email=f"{'a' * 10_000}@example.org"),
    bad("phone", "long-phone", phone="1" * 10_000),
    bad("postal_code", "long-postal", postal_code="9" * 10_000),
    bad("signature", "long-signature", signature=TEN_THOUSAND),
    bad(
        "representative_authority",
        "long-authority",
        filler="representative",
        representative_authority=TEN_THOUSAND,
    ),
    bad(
        "cancer_other", "long-cancer-other", cancer_type="other_not_sure", cancer_other="x" * 10_000
    ),
    # SQL
    bad("full_name", "sql-or-name", full_name=SQL_OR),
    bad("full_name", "sql-drop-name", full_name=SQL_DROP),
    bad("email", "sql-email", email=f"ana@example.org{SQL_OR}"),
    bad("phone", "sql-phone", phone=SQL_DROP),
    bad("postal_code", "sql-postal", postal_code=SQL_OR),
    bad("signature", "sql-signature", signature=SQL_DROP),
    bad("cancer_type", "sql-cancer-type", cancer_type="breast' OR '1'='1"),
    # HTML and script
    bad("full_name", "script-name", full_name=SCRIPT),
    bad("full_name", "attribute-breakout-name", full_name=BREAKOUT),
    bad("email", "script-email", email=f"{SCRIPT}@example.org"),
    bad("phone", "script-phone", phone='<img src=x onerror="alert(1)">'),
    bad("postal_code", "script-postal", postal_code="<b>94110</b>"),
    bad("signature", "breakout-signature", signature=BREAKOUT),
    bad("country", "script-country", country=SCRIPT),
    # right-to-left overrides and isolates
    bad("full_name", "rlo-name", full_name=f"Ana {RLO}zepóL"),
    bad("signature", "lro-signature", signature="\u202dAna López"),
    bad("email", "rlo-email", email=f"ana{RLO}gro.elpmaxe@example.org"),
    bad(
        "representative_authority",
        "isolate-authority",
        filler="representative",
        representative_authority="\u2066power of attorney\u2069",
    ),
    bad("full_name", "line-separator-name", full_name="Ana\u2028López"),
    # emoji
    bad("full_name", "emoji-name", full_name="Ana 😀"),
    bad("signature", "emoji-signature", signature="👍"),
    # country and ZIP
    bad("postal_code", "canada-with-us-zip", country="CA", postal_code="90210"),
    bad("postal_code", "us-with-canadian-code", postal_code="K1A 0B1"),
    bad("postal_code", "us-with-arabic-indic-zip", postal_code="٩٤١١٠"),
    bad("phone postal_code", "gb-with-us-phone-and-zip", country="GB"),
    bad("country", "unknown-country", country="ZZ"),
    bad("country", "region-not-country", country="EU"),
    bad("country", "numeric-region", country="001"),
    # choices not in the lists
    bad("cancer_type", "unknown-cancer-type", cancer_type="not_a_cancer"),
    bad("cancer_type", "group-code-not-type", cancer_type="lung_chest"),
    bad("filler", "unknown-filler", filler="grandma"),
    bad("contact_method", "unknown-contact-method", contact_method="fax"),
    # rules that span fields
    bad("representative_authority", "representative-without-authority", filler="representative"),
    bad(
        "representative_authority",
        "representative-authority-blank",
        filler="representative",
        representative_authority="   ",
    ),
    bad("email", "contact-by-email-without-email", email=""),
    bad("phone", "contact-by-phone-without-phone", phone="", contact_method="phone"),
    bad("phone", "contact-by-text-without-phone", phone="", contact_method="text"),
    bad("email", "neither-email-nor-phone", email="", phone=""),
    # the authorization
    bad("agree", "agree-missing", agree=None),
    bad("agree", "agree-empty", agree=""),
    bad("agree", "agree-n", agree="n"),
    bad("agree", "agree-false", agree="false"),
    bad("agree", "agree-0", agree="0"),
    bad("agree", "agree-on", agree="on"),
    bad("agree", "agree-Y", agree="Y"),
    bad("signature", "signature-empty", signature=""),
    bad("signature", "signature-punctuation-only", signature="'-.’"),
    bad(
        "cancer_other",
        "cancer-other-201",
        cancer_type="other_not_sure",
        cancer_other="x" * 201,
    ),
    # repeated fields: the first value is the one that counts
    bad("email", "repeated-email", email=["not-an-email", "ana@example.org"]),
    bad("agree", "repeated-agree", agree=["n", "y"]),
    bad("filler", "repeated-filler-under-18", filler=["self", "parent"], **birthday(today())),
    # junk the form does not know is ignored, however long
    bad(
        "signature",
        "long-unknown-fields",
        signature="",
        **{f"junk_{'x' * 2000}": "y" * 20_000, "__proto__": "{}", "csrf_token_2": "z" * 5000},
    ),
]
BOTH_DATABASES = {
    "everything-empty",
    "17y364d-as-self",
    "nul-name",
    "sql-drop-name",
    "breakout-signature",
    "rlo-name",
    "canada-with-us-zip",
    "agree-n",
}


def test_the_matrix_is_at_least_forty_cases() -> None:
    assert len(BAD_INPUTS) >= 40


def check_refused(
    app: Flask, client: FlaskClient, overrides: dict[str, Any], errors: tuple[str, ...]
) -> None:
    answers = answers_with(overrides)
    before = stored(app)
    response = send(client, answers)
    html = response.get_data(as_text=True)

    assert response.status_code == 422
    page = Page(html)
    expected = [name for name in PAGE_ORDER if name in errors]
    assert [link for link, _message in error_links(html)] == [
        anchor(name, answers) for name in expected
    ]
    duplicated = [element_id for element_id, count in page.ids().items() if count > 1]
    assert not duplicated, f"ids used twice: {duplicated}"
    for (link, message), name in zip(error_links(html), expected, strict=True):
        page.by_id(link)  # the link lands on a field of the page
        at_field = page.by_id(f"{name}-error").all_text()
        assert unescape(message).strip() in " ".join(at_field.split())

    shown = page.shown()
    for name, typed in answers.items():
        if name not in valid_answers():
            continue
        if name in overrides and name in TEXT_FIELDS:
            assert shown[name] == printable(first(typed)), name  # kept, minus invisible chars
        elif name in overrides:
            continue
        elif name == "agree":
            assert shown.get("agree") == "y", "the ticked box is no longer ticked"
        else:
            assert shown.get(name) == typed, f"{name}: {shown.get(name)!r} != {typed!r}"
    if "agree" in errors:
        assert "agree" not in shown, "an agreement refused is shown as ticked"

    assert "\x00" not in html
    assert RLO not in html
    assert html.count("<script") == 1, "a payload reached the page as markup"
    assert stored(app) == before, "a refused form stored something"


@pytest.fixture(scope="module")
def shared_app(
    sqlite_template: Path, keyring_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """One SQLite app for the refusal matrix and the page checks.

    A refused form stores nothing and each case compares row counts before and after, so
    cases cannot disturb each other; one app compiles its templates once, not once per case.
    """
    base = tmp_path_factory.mktemp("patient-form")
    path = base / "intake.sqlite3"
    shutil.copyfile(sqlite_template, path)
    keys = base / "keys"
    shutil.copytree(keyring_template, keys)
    factory = AppFactory(Database("sqlite", f"sqlite:///{path}", sqlite_path=path), base, keys)
    yield factory()
    factory.close()


@pytest.mark.parametrize(("overrides", "errors"), BAD_INPUTS)
def test_bad_input_is_refused_with_everything_kept(
    shared_app: Flask, overrides: dict[str, Any], errors: tuple[str, ...]
) -> None:
    check_refused(shared_app, shared_app.test_client(), overrides, errors)


@pytest.mark.parametrize(
    ("overrides", "errors"), [case for case in BAD_INPUTS if case.id in BOTH_DATABASES]
)
def test_bad_input_is_refused_on_both_databases(
    app: Flask, client: FlaskClient, overrides: dict[str, Any], errors: tuple[str, ...]
) -> None:
    check_refused(app, client, overrides, errors)


def test_the_under_18_message_says_who_must_fill_it_in(shared_app: Flask) -> None:
    client = shared_app.test_client()
    response = send(client, valid_answers(**birthday(years_ago(12))))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    [(link, message)] = error_links(html)
    assert link == "filler-self"
    assert UNDER_18 in message
    assert UNDER_18 in " ".join(Page(html).by_id("filler-error").all_text().split())


# ---------------------------------------------------------------------------- hostile bodies


def test_a_file_in_place_of_a_field_is_not_a_500(shared_app: Flask) -> None:
    client = shared_app.test_client()
    before = stored(shared_app)
    body: dict[str, Any] = {**open_form(client), **valid_answers()}
    body["full_name"] = (io.BytesIO(b"Ana"), "name.txt")
    body["country"] = (io.BytesIO(b"US"), "country.txt")
    response = client.post("/", data=body, content_type="multipart/form-data")
    assert response.status_code == 422
    assert [link for link, _ in error_links(response.get_data(as_text=True))] == ["full_name"]
    assert stored(shared_app) == before


@pytest.mark.parametrize(
    "payload",
    [[1, 2], "a string", 5, None, {"full_name": 5, "agree": True}, valid_answers()],
    ids=["list", "string", "number", "null", "wrong-types", "valid-answers"],
)
def test_a_json_body_is_not_a_500_and_stores_nothing(shared_app: Flask, payload: Any) -> None:
    """A JSON body passes CSRF with the header; the form reads only form fields, never JSON."""
    client = shared_app.test_client()
    before = stored(shared_app)
    token = open_form(client)["csrf_token"]
    response = client.post(
        "/",
        data=json.dumps(payload),
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 422
    assert stored(shared_app) == before


def test_bytes_that_are_not_utf8_are_not_a_500(shared_app: Flask) -> None:
    client = shared_app.test_client()
    before = stored(shared_app)
    hidden = urlencode(open_form(client)).encode()
    body = hidden + b"&full_name=%FF%FE%ED%A0%80&email=\xff\xfe@example.org&agree=y"
    response = client.post("/", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 422
    assert "\x00" not in response.get_data(as_text=True)
    assert stored(shared_app) == before


def test_a_body_over_the_size_limit_is_refused_without_storing(shared_app: Flask) -> None:
    client = shared_app.test_client()
    before = stored(shared_app)
    limit = int(shared_app.config["MAX_CONTENT_LENGTH"])
    response = send(client, valid_answers(cancer_other="x" * (limit + 1)))
    assert response.status_code == 413
    assert stored(shared_app) == before


def test_a_post_without_its_csrf_token_is_not_stored(shared_app: Flask) -> None:
    client = shared_app.test_client()
    before = stored(shared_app)
    hidden = {k: v for k, v in open_form(client).items() if k != "csrf_token"}
    response = send(client, valid_answers(), hidden=hidden)
    assert response.status_code == 422
    assert Page(response.get_data(as_text=True)).shown()["full_name"] == "Ana MARKER"
    assert stored(shared_app) == before


def test_junk_fields_alone_do_not_stop_a_valid_form(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    junk = {f"junk_{'x' * 2000}": "y" * 20_000, "__proto__": "{}", "is_admin": "1"}
    response = send(client, {**valid_answers(), **junk})
    assert response.status_code == 303
    assert stored(sqlite_app)[0] == 1


# ---------------------------------------------------------------------------- good inputs


@dataclass(frozen=True)
class Good:
    answers: dict[str, str]
    age_band: str
    signer_role: str
    sealed: dict[str, Any]  # what the sealed payload must hold (a subset)
    cancer_type: str = "breast"


def good(case_id: str, good_case: Good) -> Any:
    return pytest.param(good_case, id=case_id)


def answers_for(**overrides: str) -> dict[str, str]:
    """valid_answers() for a patient of 50 today, so the age band never drifts with the years."""
    return valid_answers(**{**birthday(years_ago(50)), **overrides})


GOOD_INPUTS = [
    good(
        "exactly-18-today-as-self",
        Good(
            answers_for(**birthday(years_ago(18))),
            "18-39",
            "self",
            {"birthday": years_ago(18).isoformat()},
        ),
    ),
    good(
        "under-18-as-parent",
        Good(
            answers_for(filler="parent", signature="Marta López", **birthday(years_ago(12))),
            "0-17",
            "parent_guardian",
            {"signature": "Marta López", "full_name": "Ana MARKER"},
        ),
    ),
    good(
        "17y364d-as-parent",
        Good(
            answers_for(filler="parent", **birthday(years_ago(18, days=1))),
            "0-17",
            "parent_guardian",
            {"representative_authority": None},
        ),
    ),
    good(
        "representative-with-authority",
        Good(
            answers_for(
                filler="representative",
                representative_authority="  Healthcare power of attorney  ",
                **birthday(years_ago(85)),
            ),
            "80+",
            "legal_representative",
            {"representative_authority": "Healthcare power of attorney"},
        ),
    ),
    good(
        "authority-ignored-unless-representative",
        Good(
            answers_for(representative_authority="something typed, then changed my mind"),
            "40-64",
            "self",
            {"representative_authority": None},
        ),
    ),
    good(
        "exactly-120-years-ago",
        Good(
            answers_for(
                filler="representative",
                representative_authority="Guardian",
                **birthday(years_ago(120)),
            ),
            "80+",
            "legal_representative",
            {"birthday": years_ago(120).isoformat()},
        ),
    ),
    good(
        "arabic-name",
        Good(
            answers_for(full_name="محمد عَبْد الله", signature="محمد عَبْد الله"),
            "40-64",
            "self",
            {"full_name": "محمد عَبْد الله", "signature": "محمد عَبْد الله"},
        ),
    ),
    good(
        "chinese-name",
        Good(
            answers_for(full_name="王小明", signature="王小明"),
            "40-64",
            "self",
            {"full_name": "王小明"},
        ),
    ),
    good(
        "decomposed-accents-and-apostrophes",
        Good(
            answers_for(
                full_name="  Jose\u0301   O’Brien-Nu\u0301n\u0303ez ",
                signature="Sea\u0301n O'Brien",
            ),
            "40-64",
            "self",
            {"full_name": "José O’Brien-Núñez", "signature": "Seán O'Brien"},
        ),
    ),
    good(
        "phone-only",
        Good(
            answers_for(email="", phone=" 415.555.2671 ", contact_method="phone"),
            "40-64",
            "self",
            {"email": None, "phone": "+14155552671", "contact_method": "phone"},
        ),
    ),
    good(
        "email-only",
        Good(
            answers_for(email="  Ana.Lopez+Trials@EXAMPLE.org ", phone=""),
            "40-64",
            "self",
            {"email": "Ana.Lopez+Trials@example.org", "phone": None},
        ),
    ),
    good(
        "canadian-postal-code",
        Good(
            answers_for(country="CA", postal_code="k1a0b1", phone="(613) 555-2671"),
            "40-64",
            "self",
            {"country": "CA", "postal_code": "K1A 0B1", "phone": "+16135552671"},
        ),
    ),
    good(
        "no-postal-code-country",
        Good(
            answers_for(country="AE", postal_code="", phone="050 123 4567"),
            "40-64",
            "self",
            {"country": "AE", "postal_code": "", "phone": "+971501234567"},
        ),
    ),
    good(
        "other-with-description",
        Good(
            answers_for(
                cancer_type="other_not_sure", cancer_other=" Ca\u0301ncer raro\r\nde piel "
            ),
            "40-64",
            "self",
            {"cancer_other": "Cáncer raro\nde piel"},
            cancer_type="other_not_sure",
        ),
    ),
    good(
        "description-ignored-unless-other",
        Good(
            answers_for(cancer_other="typed before choosing breast"),
            "40-64",
            "self",
            {"cancer_other": None},
        ),
    ),
]


def only_submission(app: Flask) -> tuple[Submission, dict[str, Any]]:
    """The one stored row and its opened payload (the open is audited, then rolled back)."""
    with app.app_context():
        row = db.session.scalars(select(Submission)).one()
        payload = open_submission(db.session(), current_keyring(), row, actor="test")
        db.session.expunge(row)
        db.session.rollback()
    return row, payload


@pytest.mark.parametrize("case", GOOD_INPUTS)
def test_good_input_is_stored_once_cleaned(app: Flask, client: FlaskClient, case: Good) -> None:
    before = stored(app)
    response = send(client, case.answers)
    assert response.status_code == 303, error_links(response.get_data(as_text=True))
    assert response.headers["Location"].startswith("/confirmation/")
    assert client.get(response.headers["Location"]).status_code == 200
    assert stored(app)[0] == before[0] + 1

    row, payload = only_submission(app)
    assert row.age_band == case.age_band
    assert row.signer_role == case.signer_role
    assert row.cancer_type == case.cancer_type
    for name, value in case.sealed.items():
        assert payload[name] == value, name
    for name in ("full_name", "signature", "email", "phone", "postal_code", "cancer_other"):
        value = payload[name]
        if isinstance(value, str):
            assert value == value.strip(), name
            assert unicodedata.is_normalized("NFC", value), name


# ---------------------------------------------------------------------------- random bodies

RESERVED = {"csrf_token", "form_token", "website", "switch_language"}  # the honeypot is elsewhere
FORM_FIELDS = (*valid_answers(), "source", "consent_version", "consent_language")
CHARACTERS = st.characters(blacklist_categories=("Cs",))  # surrogates cannot be sent as UTF-8
TEXTS = st.one_of(
    st.text(CHARACTERS, max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            RLO,
            "😀",
            SQL_OR,
            SQL_DROP,
            SCRIPT,
            BREAKOUT,
            "٩٤١١٠",
            "9" * 40,
            "29",
            "2",
            "y",
            "n",
            "self",
            "parent",
            "representative",
            "other_not_sure",
            "CA",
            "AE",
            "phone",
            "text",
            "+44 20 7946 0958",
        ]
    ),
    st.builds(lambda char, count: char * count, CHARACTERS, st.integers(200, 12_000)),
)
JUNK_NAMES = st.text(CHARACTERS, min_size=1, max_size=30).filter(lambda name: name not in RESERVED)
PAIRS = st.lists(st.tuples(st.one_of(st.sampled_from(FORM_FIELDS), JUNK_NAMES), TEXTS), max_size=20)


@st.composite
def mutated_answers(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Valid answers with one or two fields changed or left out, and perhaps some junk."""
    answers: dict[str, str] = valid_answers()
    for name in draw(st.lists(st.sampled_from(FORM_FIELDS), min_size=1, max_size=2)):
        value = draw(st.one_of(st.none(), TEXTS))
        if value is None:
            answers.pop(name, None)
        else:
            answers[name] = value
    junk = draw(st.lists(st.tuples(JUNK_NAMES, TEXTS), max_size=3))
    return [*answers.items(), *junk]


BODIES = st.one_of(PAIRS, mutated_answers(), st.builds(lambda: list(valid_answers().items())))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pairs=BODIES)
def test_random_bodies_never_fail_and_store_only_valid_forms(
    sqlite_app: Flask, pairs: list[tuple[str, str]]
) -> None:
    client = sqlite_app.test_client()
    limit = int(sqlite_app.config["MAX_CONTENT_LENGTH"])
    # The random fields come first: for a field sent twice, the first value is the one read.
    body = urlencode([*pairs, *open_form(client).items()]).encode()
    before = stored(sqlite_app)
    response = client.post("/", data=body, content_type="application/x-www-form-urlencoded")
    after = stored(sqlite_app)

    assert response.status_code < 500
    event(f"status {response.status_code}")
    if len(body) > limit:
        assert response.status_code == 413
        assert after == before
    elif response.status_code == 303:
        assert after[0] == before[0] + 1, "accepted but not stored"
    else:
        assert response.status_code == 422
        assert after == before, "refused but stored"
        assert b"\x00" not in response.data


# ---------------------------------------------------------------------------- the page with errors

ALL_WRONG: dict[str, Any] = {
    "filler": "grandma",
    "cancer_type": "not_a_cancer",
    "cancer_other": "x" * 201,
    "birth_day": "31",
    "birth_month": "2",
    "birth_year": "1980",
    "full_name": "R2D2",
    "email": "nope",
    "phone": "12",
    "postal_code": "!",
    "country": "EU",
    "contact_method": "",
    "agree": None,
    "signature": "",
}
WRONG_AUTHORITY: dict[str, Any] = {"filler": "representative", "representative_authority": ""}
UNDER_18_AS_SELF: dict[str, Any] = birthday(years_ago(12))


def controls(name: str) -> tuple[str, ...]:
    return CONTROLS.get(name, (name,))


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        pytest.param(ALL_WRONG, set(PAGE_ORDER) - {"representative_authority"}, id="all-wrong"),
        pytest.param(WRONG_AUTHORITY, {"representative_authority"}, id="authority"),
    ],
)
def test_the_page_with_errors_is_announced_and_linked(
    shared_app: Flask, overrides: dict[str, Any], fields: set[str]
) -> None:
    response = send(shared_app.test_client(), answers_with(overrides))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    page = Page(html)

    assert page.first("title").all_text().strip().startswith("Error:")
    main = page.first("main")
    assert main.children[0].attrs.get("id") == "error-summary", "the summary must open <main>"
    assert {name for name in PAGE_ORDER if page.ids()[f"{name}-error"]} == fields

    for name in PAGE_ORDER:
        for control_id in controls(name):
            control = page.by_id(control_id)
            described = [
                node.attrs.get("aria-describedby", "").split()
                for node in (control, *control.ancestors())
            ]
            invalid = control.attrs.get("aria-invalid") == "true"
            if name not in fields:
                assert not invalid, f"{control_id} is marked invalid without an error"
                continue
            assert any(f"{name}-error" in ids for ids in described), (
                f"{control_id} is not described by its error message"
            )
            # Radios follow GOV.UK: the group's fieldset carries the error, not each radio.
            if name not in RADIO_GROUPS:
                assert invalid, f"{control_id} has no aria-invalid"
    assert_references_resolve(page)


def test_every_hint_and_label_on_the_empty_form_points_at_something(shared_app: Flask) -> None:
    response = shared_app.test_client().get("/")
    page = Page(response.get_data(as_text=True))
    assert not page.first("title").all_text().strip().startswith("Error:")
    assert "error-summary" not in page.ids()
    assert not [node for node in page.nodes if node.attrs.get("aria-invalid")]
    hints = [node.attrs["id"] for node in page.nodes if node.attrs.get("id", "").endswith("-hint")]
    assert len(hints) >= 8
    assert_references_resolve(page)


def assert_references_resolve(page: Page) -> None:
    """aria-describedby, aria-labelledby, label for= and in-page links all name real ids."""
    ids = page.ids()
    assert not [element_id for element_id, count in ids.items() if count > 1], "duplicate ids"
    for node in page.nodes:
        referenced = [
            *node.attrs.get("aria-describedby", "").split(),
            *node.attrs.get("aria-labelledby", "").split(),
        ]
        if node.tag == "label" and "for" in node.attrs:
            referenced.append(node.attrs["for"])
        if node.tag == "a" and node.attrs.get("href", "").startswith("#"):
            referenced.append(node.attrs["href"][1:])
        for element_id in referenced:
            assert ids[element_id] == 1, f"<{node.tag}> refers to missing id {element_id!r}"


# ---------------------------------------------------------------------------- Spanish


def messages(response: TestResponse) -> dict[str, str]:
    """Each error message by the field it belongs to (the message at the field)."""
    page = Page(response.get_data(as_text=True))
    found = {}
    for name in PAGE_ORDER:
        if page.ids()[f"{name}-error"]:
            node = page.by_id(f"{name}-error")
            hidden = "".join(child.all_text() for child in node.children)  # the "Error:" prefix
            found[name] = " ".join(node.all_text().replace(hidden, "", 1).split())
    return found


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        pytest.param(ALL_WRONG, name, id=name)
        for name in PAGE_ORDER
        if name != "representative_authority"
    ]
    + [
        pytest.param(WRONG_AUTHORITY, "representative_authority", id="representative_authority"),
        pytest.param(UNDER_18_AS_SELF, "filler", id="under-18"),
    ],
)
def test_errors_are_in_spanish_on_the_spanish_form(
    shared_app: Flask, overrides: dict[str, Any], name: str
) -> None:
    client = shared_app.test_client()
    answers = answers_with(overrides)
    english = messages(send(client, answers))
    response = send(client, answers, path="/?lang=es")
    assert response.status_code == 422
    page = Page(response.get_data(as_text=True))
    assert page.first("html").attrs["lang"] == "es"
    assert page.by_id("error-summary-title").all_text().strip() == "Hay un problema"
    spanish = messages(response)
    assert set(spanish) == set(english)
    assert [link for link, _ in error_links(response.get_data(as_text=True))] == [
        link for link, _ in error_links(send(client, answers).get_data(as_text=True))
    ]
    assert spanish[name] != english[name], f"not translated into Spanish: {english[name]!r}"
