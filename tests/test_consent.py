"""The HIPAA authorization texts: complete in every language, pinned, and refused when broken."""

from __future__ import annotations

import re
import shutil
import tomllib
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask

from intake import consent
from intake.consent import (
    ACTIVE_VERSION,
    PACKAGED_DIR,
    REQUIRED_ELEMENTS,
    ConsentError,
    ConsentText,
    check_complete,
    load_texts,
    render_for,
)

ROOT = Path(__file__).resolve().parent.parent
ORGANIZATION = "Intake Research Site"
LANGUAGES = ("en", "es")

# The SHA-256 of every shipped text, rendered for ORGANIZATION. People have signed these texts
# and their hashes are stored with the submissions: a shipped text must never change.
PINNED = {
    ("2026-11-v1", "en"): "0d881f2483eb1f09c4276d1f6ada99f08bfbf6016fde2f32c022f5e21614b650",
    ("2026-11-v1", "es"): "9831890546b47f069e35c887754f2f84cf65c0e45b20a027f59861550f0e9fff",
}
NEVER_EDIT = (
    "a shipped authorization text changed. People signed the old wording and its SHA-256 is "
    "stored with their submission, so shipped texts must never change: restore the file and add "
    "a new version folder under intake/consent_texts/ instead (docs/authorization.md)."
)


@pytest.fixture(scope="module")
def templates() -> dict[tuple[str, str], ConsentText]:
    return load_texts()


def rendered(
    templates: dict[tuple[str, str], ConsentText], language: str, organization: str = ORGANIZATION
) -> ConsentText:
    return render_for(templates, ACTIVE_VERSION, language, organization)


# --- the shipped texts -------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_active_version_loads_and_is_complete(
    templates: dict[tuple[str, str], ConsentText], language: str
) -> None:
    text = rendered(templates, language)
    check_complete(text)
    assert (text.version, text.language) == (ACTIVE_VERSION, language)
    assert text.expires_after == timedelta(days=730)
    assert text.title and text.agreement and text.signature_label


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("element", REQUIRED_ELEMENTS)
def test_every_element_is_in_the_signed_text(
    templates: dict[tuple[str, str], ConsentText], language: str, element: str
) -> None:
    text = rendered(templates, language)
    sentence = text.elements[element]
    assert len(sentence) > 20, f"{element} is suspiciously short: {sentence!r}"
    assert sentence in text.rendered()
    assert any(sentence in paragraph for paragraph in text.paragraphs)


def test_required_elements_cover_164_508() -> None:
    assert set(REQUIRED_ELEMENTS) >= {
        "information",
        "disclosers",
        "recipient",
        "purpose",
        "expiry",
        "signature",
        "representative_authority",
        "revocation",
        "no_conditioning",
        "redisclosure",
        "copy",
        "not_participation",
    }


def test_english_says_records_only_and_not_participation(
    templates: dict[tuple[str, str], ConsentText],
) -> None:
    text = rendered(templates, "en")
    signed = text.rendered()
    assert (
        "You are consenting only to release your medical records; you are not agreeing to "
        "participate in clinical trials yet." in text.elements["not_participation"]
    )
    assert "medical records only" in text.elements["information"]
    assert "separate decision" in text.elements["not_participation"]
    assert "not agreeing to take part in a clinical trial" in text.agreement
    assert "psychotherapy notes" in signed  # needs its own authorization (164.508(a)(2))
    assert "/withdraw" in text.elements["revocation"]
    assert "in writing" in text.elements["revocation"]
    assert "730 days" in text.elements["expiry"]


def test_spanish_says_records_only_and_not_participation(
    templates: dict[tuple[str, str], ConsentText],
) -> None:
    text = rendered(templates, "es")
    assert (
        "Usted solo está dando su consentimiento para compartir sus expedientes médicos; todavía "
        "no está aceptando participar en estudios clínicos." in text.elements["not_participation"]
    )
    assert "solo permite compartir sus expedientes médicos" in text.elements["information"]
    assert "decisión aparte" in text.elements["not_participation"]
    assert "No estoy aceptando participar en un estudio clínico" in text.agreement
    assert "notas de psicoterapia" in text.rendered()
    assert "/withdraw" in text.elements["revocation"]
    assert "por escrito" in text.elements["revocation"]
    assert "730 días" in text.elements["expiry"]
    assert "usted" in text.rendered().lower()


@pytest.mark.parametrize("language", LANGUAGES)
def test_languages_have_the_same_shape(
    templates: dict[tuple[str, str], ConsentText], language: str
) -> None:
    english = templates[(ACTIVE_VERSION, "en")]
    text = templates[(ACTIVE_VERSION, language)]
    assert text.expires_after == english.expires_after
    assert [len(s.paragraphs) for s in text.sections] == [
        len(s.paragraphs) for s in english.sections
    ]


@pytest.mark.parametrize("language", LANGUAGES)
def test_organization_is_substituted_everywhere(
    templates: dict[tuple[str, str], ConsentText], language: str
) -> None:
    organization = "Mercy Oncology & <Partners>"  # plain text: nothing is escaped
    text = rendered(templates, language, organization)
    signed = text.rendered()
    assert "{" not in signed and "}" not in signed
    assert organization in text.elements["recipient"]
    assert organization in text.elements["redisclosure"]
    assert all("{" not in value for value in text.elements.values())
    check_complete(text)
    template = templates[(ACTIVE_VERSION, language)]
    assert "{organization}" in template.elements["recipient"]
    assert template.organization is None and text.organization == organization


@pytest.mark.parametrize("language", LANGUAGES)
def test_rendered_is_title_sections_then_agreement(
    templates: dict[tuple[str, str], ConsentText], language: str
) -> None:
    text = rendered(templates, language)
    lines = text.rendered().split("\n")
    assert lines[0] == text.title
    assert lines[-1] == text.agreement
    expected = [text.title]
    for section in text.sections:
        expected += [section.heading] if section.heading else []
        expected += list(section.paragraphs)
    assert lines == [*expected, text.agreement]
    assert unicodedata.is_normalized("NFC", text.rendered())
    assert "\n\n" not in text.rendered()


def test_render_does_not_change_the_template(
    templates: dict[tuple[str, str], ConsentText],
) -> None:
    before = templates[(ACTIVE_VERSION, "en")].rendered()
    rendered(templates, "en", "Someone Else")
    assert templates[(ACTIVE_VERSION, "en")].rendered() == before


@pytest.mark.parametrize(("version", "language"), sorted(PINNED))
def test_shipped_text_never_changes(version: str, language: str) -> None:
    text = render_for(load_texts(), version, language, ORGANIZATION)
    assert text.sha256() == PINNED[(version, language)], f"{version}/{language}: {NEVER_EDIT}"


def test_every_shipped_text_is_pinned(templates: dict[tuple[str, str], ConsentText]) -> None:
    unpinned = sorted(set(templates) - set(PINNED))
    assert not unpinned, (
        f"new authorization texts {unpinned}: add their sha256 to PINNED in this file once the "
        "wording is final (after that they must never change)"
    )
    assert (ACTIVE_VERSION, "en") in templates and (ACTIVE_VERSION, "es") in templates


def test_sha256_is_of_the_rendered_utf8(templates: dict[tuple[str, str], ConsentText]) -> None:
    import hashlib

    text = rendered(templates, "es")
    assert text.sha256() == hashlib.sha256(text.rendered().encode("utf-8")).hexdigest()
    assert rendered(templates, "es", "Other Site").sha256() != text.sha256()


@pytest.mark.parametrize(
    "signed_at",
    [
        datetime(2026, 11, 25, 14, 30, tzinfo=UTC),
        datetime(2028, 2, 29, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 25, 14, 30),
    ],
)
def test_expires_at_is_signed_at_plus_days(
    templates: dict[tuple[str, str], ConsentText], signed_at: datetime
) -> None:
    text = rendered(templates, "en")
    assert text.expires_at(signed_at) == signed_at + timedelta(days=730)
    assert text.expires_at(signed_at).tzinfo is signed_at.tzinfo


def test_docs_quote_every_element_of_the_active_version(
    templates: dict[tuple[str, str], ConsentText],
) -> None:
    docs = " ".join((ROOT / "docs" / "authorization.md").read_text(encoding="utf-8").split())
    for language in LANGUAGES:
        text = templates[(ACTIVE_VERSION, language)]
        for element in REQUIRED_ELEMENTS:
            assert text.elements[element] in docs, (
                f"docs/authorization.md does not quote the {language} {element!r} sentence of "
                f"{ACTIVE_VERSION}; update its table"
            )


# --- refusals -------------------------------------------------------------------------------

Edit = Callable[[Path], None]


def _split(path: Path) -> tuple[str, str]:
    """Front matter and body of a text file (the body keeps its leading newline)."""
    _, front, body = path.read_text(encoding="utf-8").split("+++", 2)
    return front, body


def _write(path: Path, front: str, body: str) -> None:
    path.write_text(f"+++{front}+++{body}", encoding="utf-8")


def _edit_front(pattern: str, replacement: str) -> Edit:
    def edit(path: Path) -> None:
        front, body = _split(path)
        changed, count = re.subn(pattern, replacement, front, count=1, flags=re.MULTILINE)
        assert count == 1, f"test setup: {pattern!r} not found"
        _write(path, changed, body)

    return edit


def _edit_body(old: str, new: str) -> Edit:
    def edit(path: Path) -> None:
        front, body = _split(path)
        assert old in body, f"test setup: {old!r} not in body"
        _write(path, front, body.replace(old, new, 1))

    return edit


def _element_reworded(element: str) -> Edit:
    """Change the element's passage in the body only, so the front matter no longer matches."""

    def edit(path: Path) -> None:
        front, body = _split(path)
        sentence = tomllib.loads(front)["elements"][element]
        paragraphs = [" ".join(block.split()) for block in body.split("\n\n")]
        hits = [i for i, paragraph in enumerate(paragraphs) if sentence in paragraph]
        assert hits, "test setup: element not found in body"
        for i in hits:
            paragraphs[i] = paragraphs[i].replace(sentence, sentence.replace(" ", " really ", 1))
        _write(path, front, "\n" + "\n\n".join(paragraphs) + "\n")

    return edit


REFUSALS = [
    # (language file to break, edit, what the error must name)
    pytest.param("es", _edit_front(r"^purpose = .*\n", ""), "'purpose'", id="missing element"),
    pytest.param(
        "en",
        _edit_front(r"^redisclosure = .*$", 'redisclosure = ""'),
        "'redisclosure'",
        id="empty element",
    ),
    pytest.param("en", _edit_front(r"^copy = .*$", 'copy = "   "'), "'copy'", id="blank element"),
    pytest.param("en", _element_reworded("revocation"), "'revocation'", id="element not in body"),
    pytest.param(
        "es", _element_reworded("no_conditioning"), "'no_conditioning'", id="element not in body es"
    ),
    pytest.param(
        "en",
        _edit_body("Signing is your choice.", "<b>Signing</b> is your choice."),
        "'<'",
        id="HTML in body",
    ),
    pytest.param(
        "es", _edit_front(r'^recipient = "', 'recipient = "<i>x</i> '), "'<'", id="HTML in element"
    ),
    pytest.param("en", _edit_body("## Why", "# Why"), "body line", id="Markdown heading"),
    pytest.param(
        "en",
        _edit_body("\nSigning is your choice.", "\n- Signing is your choice."),
        "body line",
        id="Markdown list",
    ),
    pytest.param(
        "en", _edit_front(r"^title = .*$", 'title = "unterminated'), "not valid TOML", id="bad TOML"
    ),
    pytest.param(
        "es",
        _edit_front(r"^version = .*$", 'version = "2026-12-v1"'),
        "'version'",
        id="version mismatch",
    ),
    pytest.param(
        "es",
        _edit_front(r"^language = .*$", 'language = "en"'),
        "'language'",
        id="language mismatch",
    ),
    pytest.param(
        "en",
        _edit_front(r"^expires_after_days = .*$", "expires_after_days = 365"),
        "'expiry'",
        id="expiry days disagree with the text",
    ),
    pytest.param(
        "en",
        _edit_front(r"^expires_after_days = .*$", "expires_after_days = 0"),
        "'expires_after_days'",
        id="zero days",
    ),
    pytest.param(
        "en",
        _edit_body("sent to {organization}.", "sent to {organisation}."),
        "{organisation}",
        id="unknown placeholder",
    ),
    pytest.param(
        "en",
        _edit_front(r"^recipient = .*$", 'recipient = "Your records will be sent."'),
        "'recipient'",
        id="recipient without organization",
    ),
    pytest.param(
        "en",
        _edit_front(r"^\[elements\]$", '[elements]\nextra = "x"'),
        "extra",
        id="unknown element",
    ),
    pytest.param("en", _edit_front(r"^title = .*\n", ""), "'title'", id="missing title"),
    pytest.param(
        "en",
        lambda path: path.write_text("## Hi\n\nText.\n", encoding="utf-8"),
        "+++",
        id="no front matter",
    ),
]


@pytest.fixture
def texts_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "consent_texts"
    shutil.copytree(PACKAGED_DIR, folder)
    return folder


def make_app(folder: Path, **config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(
        LANGUAGES=LANGUAGES, ORGANIZATION_NAME=ORGANIZATION, CONSENT_TEXTS_DIR=str(folder)
    )
    app.config.update(config)
    consent.init_app(app)
    return app


def test_the_copy_is_accepted_unchanged(texts_copy: Path) -> None:
    assert load_texts(texts_copy).keys() == load_texts().keys()


@pytest.mark.parametrize(("language", "edit", "names"), REFUSALS)
def test_broken_text_is_refused_by_the_loader(
    texts_copy: Path, language: str, edit: Edit, names: str
) -> None:
    path = texts_copy / ACTIVE_VERSION / f"{language}.md"
    edit(path)
    with pytest.raises(ConsentError) as caught:
        load_texts(texts_copy)
    message = str(caught.value)
    assert names in message
    assert str(path) in message, "the error must name the file"
    assert ACTIVE_VERSION in message and f"/{language}" in message


@pytest.mark.parametrize(("language", "edit", "names"), REFUSALS)
def test_broken_text_stops_the_app(texts_copy: Path, language: str, edit: Edit, names: str) -> None:
    edit(texts_copy / ACTIVE_VERSION / f"{language}.md")
    with pytest.raises(ConsentError, match=re.escape(names)):
        make_app(texts_copy)


def test_a_broken_old_version_also_stops_the_app(texts_copy: Path) -> None:
    old = texts_copy / "2000-01-v1"
    shutil.copytree(texts_copy / ACTIVE_VERSION, old)
    for path in old.glob("*.md"):
        _edit_front(r"^version = .*$", 'version = "2000-01-v1"')(path)
    _edit_front(r"^copy = .*\n", "")(old / "es.md")
    with pytest.raises(ConsentError, match=r"2000-01-v1/es .*'copy'"):
        make_app(texts_copy)


def test_missing_language_file_stops_the_app(texts_copy: Path) -> None:
    missing = texts_copy / ACTIVE_VERSION / "es.md"
    missing.unlink()
    assert (ACTIVE_VERSION, "en") in load_texts(texts_copy)  # the loader alone cannot know
    with pytest.raises(ConsentError, match=re.escape(f"{ACTIVE_VERSION}/es ({missing})")):
        make_app(texts_copy)


def test_a_language_without_any_text_stops_the_app(texts_copy: Path) -> None:
    with pytest.raises(ConsentError, match="no fr text"):
        make_app(texts_copy, LANGUAGES=("en", "es", "fr"))


def test_unknown_active_version_stops_the_app(texts_copy: Path) -> None:
    with pytest.raises(ConsentError, match="2099-01-v1/en"):
        make_app(texts_copy, CONSENT_VERSION="2099-01-v1")


def test_empty_organization_stops_the_app(texts_copy: Path) -> None:
    with pytest.raises(ConsentError, match="ORGANIZATION_NAME"):
        make_app(texts_copy, ORGANIZATION_NAME="  ")


def test_missing_folder_stops_the_app(tmp_path: Path) -> None:
    with pytest.raises(ConsentError, match="does not exist"):
        make_app(tmp_path / "nowhere")


def test_empty_folder_stops_the_app(tmp_path: Path) -> None:
    with pytest.raises(ConsentError, match="no consent texts"):
        make_app(tmp_path)


def test_a_text_missing_an_element_in_memory_is_incomplete(
    templates: dict[tuple[str, str], ConsentText],
) -> None:
    import dataclasses

    text = templates[(ACTIVE_VERSION, "en")]
    elements = dict(text.elements)
    del elements["no_conditioning"]
    with pytest.raises(ConsentError, match="'no_conditioning'"):
        check_complete(dataclasses.replace(text, elements=elements))


# --- inside the app ---------------------------------------------------------------------------


def test_init_app_serves_the_active_text(texts_copy: Path) -> None:
    app = make_app(texts_copy, ORGANIZATION_NAME="Mercy Oncology")
    assert "intake.consent" in app.extensions
    with app.app_context():
        spanish = consent.active_text("es")
        assert (spanish.version, spanish.language) == (ACTIVE_VERSION, "es")
        assert "Mercy Oncology" in spanish.elements["recipient"]
        assert consent.active_text("es-MX") == spanish
        assert consent.active_text("fr").language == "en"
        assert consent.signed_text(ACTIVE_VERSION, "en") == consent.active_text("en")


def test_signed_text_reproduces_the_hash_under_an_old_organization_name(
    texts_copy: Path,
) -> None:
    app = make_app(texts_copy, ORGANIZATION_NAME="New Name Cancer Center")
    with app.app_context():
        old = consent.signed_text(ACTIVE_VERSION, "en", organization=ORGANIZATION)
        assert old.sha256() == PINNED[(ACTIVE_VERSION, "en")]
        assert consent.signed_text(ACTIVE_VERSION, "en").sha256() != old.sha256()


def test_signed_text_of_an_unknown_version_is_a_key_error(texts_copy: Path) -> None:
    app = make_app(texts_copy)
    with app.app_context():
        with pytest.raises(KeyError):
            consent.signed_text("1999-01-v1", "en")
        with pytest.raises(ConsentError, match="1999-01-v1/en"):
            consent.signed_text("1999-01-v1", "en")


def test_an_older_version_stays_available(texts_copy: Path) -> None:
    old = texts_copy / "2000-01-v1"
    shutil.copytree(texts_copy / ACTIVE_VERSION, old)
    for path in old.glob("*.md"):
        _edit_front(r"^version = .*$", 'version = "2000-01-v1"')(path)
    app = make_app(texts_copy)
    with app.app_context():
        assert consent.active_text("en").version == ACTIVE_VERSION
        assert consent.signed_text("2000-01-v1", "es").version == "2000-01-v1"


def test_active_text_needs_init_app() -> None:
    app = Flask(__name__)
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        consent.active_text("en")
