"""The HIPAA authorization (45 CFR 164.508) that patients sign: versioned, checked, hashed.

Each version is a folder under ``consent_texts/`` holding one file per language
(``consent_texts/2026-11-v1/en.md``). A file is TOML front matter between two ``+++`` lines,
then a plain-text body: a ``## `` line starts a section, blank lines separate paragraphs, and
lines of one paragraph are joined with single spaces. No HTML and no Markdown markup: the page
shows the text as plain text, exactly as it is hashed.

The front matter names every core element and required statement of 164.508(c) under
``[elements]``. Each element is a passage that must also appear word for word inside one
paragraph of the body, so the text that is shown, signed and hashed provably contains it. The
app refuses to start when the active version lacks an element in any language.

**A text, once shipped, must never change.** A submission stores the version, the language and
the SHA-256 of :meth:`ConsentText.rendered`; the confirmation and coordinator pages rebuild the
signed text from the file, so editing a shipped file would silently rewrite what people signed.
To change the wording, add a new version folder and point :data:`ACTIVE_VERSION` at it; old
folders stay forever. ``tests/test_consent.py`` pins the hash of every shipped file.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from flask import Flask, current_app

ACTIVE_VERSION = "2026-11-v1"
PACKAGED_DIR = Path(__file__).resolve().parent / "consent_texts"
EXTENSION = "intake.consent"
DEFAULT_LANGUAGE = "en"
DEFAULT_LANGUAGES: tuple[str, ...] = ("en", "es")
PLACEHOLDER = "{organization}"
FENCE = "+++"
# Column widths of submissions.consent_version and submissions.consent_language.
MAX_VERSION_LENGTH = 40
MAX_LANGUAGE_LENGTH = 8

#: Each element of the authorization and the rule that requires it.
ELEMENT_SOURCES: Mapping[str, str] = MappingProxyType(
    {
        "information": "164.508(c)(1)(i): the information to be released",
        "disclosers": "164.508(c)(1)(ii): who may disclose it",
        "recipient": "164.508(c)(1)(iii): who receives it",
        "purpose": "164.508(c)(1)(iv): the purpose",
        "expiry": "164.508(c)(1)(v): an expiration date or event",
        "signature": "164.508(c)(1)(vi): signature and date",
        "representative_authority": "164.508(c)(1)(vi): a representative's authority",
        "revocation": "164.508(c)(2)(i): the right to revoke in writing, how, and the exception",
        "no_conditioning": "164.508(c)(2)(ii): treatment is not conditioned on signing",
        "redisclosure": "164.508(c)(2)(iii): redisclosure may leave HIPAA's protection",
        "copy": "164.508(c)(4): the signer gets a copy",
        "not_participation": "this service: releasing records is not joining a trial",
    }
)
REQUIRED_ELEMENTS: tuple[str, ...] = tuple(ELEMENT_SOURCES)

_FRONT_MATTER_KEYS = frozenset(
    {"version", "language", "title", "expires_after_days", "agreement", "signature_label"}
)
_TEXT_KEYS = ("title", "agreement", "signature_label")
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")
_BRACES = re.compile(r"\{[^{}]*\}|[{}]")
# Markup that the page would show literally instead of rendering: refuse rather than mislead.
_MARKUP_LINE = re.compile(r"#|[-*+>]\s|\d+[.)]\s")
_MARKUP_ANYWHERE = ("<", ">", "`", "**", "](")


class ConsentError(Exception):
    """An authorization text is missing, malformed or incomplete; the app must not start.

    The message names the version, language, file and element at fault.
    """

    def __init__(
        self,
        problem: str,
        *,
        version: str | None = None,
        language: str | None = None,
        path: Path | str | None = None,
        element: str | None = None,
    ) -> None:
        self.problem = problem
        self.version = version
        self.language = language
        self.path = str(path) if path is not None else None
        self.element = element
        where = "consent text"
        if version or language:
            where += f" {version or '?'}/{language or '?'}"
        if self.path:
            where += f" ({self.path})"
        what = f"element {element!r}: {problem}" if element else problem
        self.message = f"{where}: {what}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class UnknownConsentText(ConsentError, KeyError):
    """No text exists for that version and language (also a :class:`KeyError`)."""


_Fail = Callable[[str, str | None], ConsentError]


@dataclass(frozen=True)
class Section:
    """A heading (``None`` for text before the first heading) and its paragraphs."""

    heading: str | None
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class ConsentText:
    """One version of the authorization in one language.

    ``organization`` is ``None`` for a template as loaded (``{organization}`` still in it) and
    the organization's name once :func:`render_for` has substituted it.
    """

    version: str
    language: str
    title: str
    sections: tuple[Section, ...]
    agreement: str
    signature_label: str
    expires_after: timedelta
    elements: Mapping[str, str]
    organization: str | None = None
    source: Path | None = field(default=None, compare=False, repr=False)

    def rendered(self) -> str:
        """The canonical plain text that is signed and hashed, and that the page must show.

        Title, then each section's heading (if any) and paragraphs, then the agreement (the
        checkbox label), one per line, NFC-normalized. Paragraphs never hold a newline.
        """
        lines = [self.title]
        for section in self.sections:
            if section.heading is not None:
                lines.append(section.heading)
            lines.extend(section.paragraphs)
        lines.append(self.agreement)
        return unicodedata.normalize("NFC", "\n".join(lines))

    def sha256(self) -> str:
        """Hex SHA-256 of :meth:`rendered` in UTF-8: stored with each submission."""
        return hashlib.sha256(self.rendered().encode("utf-8")).hexdigest()

    def expires_at(self, signed_at: datetime) -> datetime:
        """When an authorization signed at ``signed_at`` ends (same timezone as given)."""
        return signed_at + self.expires_after

    @property
    def paragraphs(self) -> tuple[str, ...]:
        return tuple(paragraph for section in self.sections for paragraph in section.paragraphs)


def _nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value)


def _one_line(value: str) -> str:
    """NFC with every run of whitespace (including newlines) folded into one space."""
    return " ".join(_nfc(value).split())


def _parse(path: Path, folder_version: str, file_language: str) -> ConsentText:
    def fail(problem: str, element: str | None = None) -> ConsentError:
        return ConsentError(
            problem, version=folder_version, language=file_language, path=path, element=element
        )

    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise fail(f"cannot be read as UTF-8: {error}") from error
    lines = _nfc(raw.removeprefix("\ufeff")).splitlines()
    if not lines or lines[0].strip() != FENCE:
        raise fail(f"must start with a {FENCE} line (front matter)")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == FENCE)
    except StopIteration:
        raise fail(f"front matter is not closed by a second {FENCE} line") from None
    try:
        meta = tomllib.loads("\n".join(lines[1:end]))
    except tomllib.TOMLDecodeError as error:
        raise fail(f"front matter is not valid TOML: {error}", "front matter") from error

    unknown = sorted(set(meta) - _FRONT_MATTER_KEYS - {"elements"})
    if unknown:
        raise fail(f"unknown front matter keys: {', '.join(unknown)}", "front matter")
    if meta.get("version") != folder_version:
        raise fail(
            f"front matter says version {meta.get('version')!r} but the file is in folder "
            f"{folder_version!r}",
            "version",
        )
    if meta.get("language") != file_language:
        raise fail(
            f"front matter says language {meta.get('language')!r} but the file is named "
            f"{file_language}.md",
            "language",
        )
    texts: dict[str, str] = {}
    for key in _TEXT_KEYS:
        value = meta.get(key)
        if not isinstance(value, str) or not value.strip():
            raise fail("missing or empty", key)
        texts[key] = _one_line(value)
    days = meta.get("expires_after_days")
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise fail(f"must be a positive whole number of days, got {days!r}", "expires_after_days")

    elements_table = meta.get("elements")
    if not isinstance(elements_table, dict):
        raise fail("the [elements] table is missing", "elements")
    unknown = sorted(set(elements_table) - set(REQUIRED_ELEMENTS))
    if unknown:
        raise fail(f"unknown elements (a typo?): {', '.join(unknown)}", "elements")
    elements: dict[str, str] = {}
    for name in REQUIRED_ELEMENTS:
        value = elements_table.get(name)
        if value is None:
            raise fail("missing from [elements]", name)
        if not isinstance(value, str):
            raise fail(f"must be text, got {type(value).__name__}", name)
        elements[name] = _one_line(value)

    sections = _parse_body(lines[end + 1 :], end + 2, fail)
    for key, value in (*texts.items(), *elements.items()):
        _check_plain(value, fail, key)
    text = ConsentText(
        version=folder_version,
        language=file_language,
        title=texts["title"],
        sections=sections,
        agreement=texts["agreement"],
        signature_label=texts["signature_label"],
        expires_after=timedelta(days=days),
        elements=MappingProxyType(elements),
        organization=None,
        source=path,
    )
    check_complete(text)
    return text


def _check_plain(value: str, fail: _Fail, where: str) -> None:
    for marker in _MARKUP_ANYWHERE:
        if marker in value:
            raise fail(f"holds {marker!r}: no HTML or Markdown markup (the text is plain)", where)
    for brace in _BRACES.findall(value):
        if brace != PLACEHOLDER:
            raise fail(f"holds {brace!r}; the only placeholder is {PLACEHOLDER}", where)


def _parse_body(lines: list[str], first_line_number: int, fail: _Fail) -> tuple[Section, ...]:
    sections: list[Section] = []
    heading: str | None = None
    paragraphs: list[str] = []
    current: list[str] = []

    def end_paragraph() -> None:
        if current:
            paragraphs.append(_one_line(" ".join(current)))
            current.clear()

    def end_section(line_number: int) -> None:
        end_paragraph()
        if heading is not None and not paragraphs:
            raise fail(f"section {heading!r} has no paragraphs (line {line_number})", "body")
        if paragraphs:
            sections.append(Section(heading, tuple(paragraphs)))
        paragraphs.clear()

    for offset, line in enumerate(lines):
        number = first_line_number + offset
        stripped = line.strip()
        where = f"body line {number}"
        if stripped.startswith("## "):
            end_section(number)
            heading = _one_line(stripped[3:])
            if not heading:
                raise fail("empty heading", where)
            _check_plain(heading, fail, where)
        elif not stripped:
            end_paragraph()
        else:
            if _MARKUP_LINE.match(stripped):
                raise fail(
                    "starts with Markdown markup; only '## ' headings and plain paragraphs "
                    "are allowed",
                    where,
                )
            _check_plain(stripped, fail, where)
            current.append(stripped)
    end_section(first_line_number + len(lines))
    if not sections:
        raise fail("the body is empty", "body")
    return tuple(sections)


def check_complete(text: ConsentText) -> None:
    """Raise :class:`ConsentError` unless every required element is present and in the body.

    Works on templates (``{organization}`` not yet substituted) and on rendered texts alike.
    """

    def fail(problem: str, element: str | None = None) -> ConsentError:
        return ConsentError(
            problem,
            version=text.version,
            language=text.language,
            path=text.source,
            element=element,
        )

    for key in _TEXT_KEYS:
        if not getattr(text, key).strip():
            raise fail("missing or empty", key)
    paragraphs = text.paragraphs
    if not paragraphs:
        raise fail("the body is empty", "body")
    for name in REQUIRED_ELEMENTS:
        value = text.elements.get(name)
        if value is None:
            raise fail("missing from [elements]", name)
        if not value.strip():
            raise fail("is empty", name)
        if not any(value in paragraph for paragraph in paragraphs):
            raise fail(
                "not found word for word in any one paragraph of the body; the text shown and "
                "signed must contain it",
                name,
            )
    days = str(text.expires_after.days)
    if days not in text.elements["expiry"]:
        raise fail(f"does not state expires_after_days ({days}) in the text", "expiry")
    if text.organization is None:
        if PLACEHOLDER not in text.elements["recipient"]:
            raise fail(f"must name the recipient as {PLACEHOLDER}", "recipient")
    else:
        if text.organization not in text.elements["recipient"]:
            raise fail(f"does not name the organization {text.organization!r}", "recipient")
        leftover = _BRACES.findall(text.rendered())
        if leftover:
            raise fail(f"placeholders left after rendering: {', '.join(leftover)}", "body")


def load_texts(folder: Path | None = None) -> dict[tuple[str, str], ConsentText]:
    """Every version and language in ``folder`` (default: the packaged texts), as templates.

    Each file is parsed and checked for completeness; ``{organization}`` is left in place.
    """
    root = PACKAGED_DIR if folder is None else Path(folder)
    if not root.is_dir():
        raise ConsentError(f"the consent texts folder does not exist: {root}", path=root)
    texts: dict[tuple[str, str], ConsentText] = {}
    for version_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        version = version_dir.name
        if version.startswith((".", "_")):
            continue
        if len(version) > MAX_VERSION_LENGTH:
            raise ConsentError(
                f"version folder names are at most {MAX_VERSION_LENGTH} characters",
                version=version,
                path=version_dir,
            )
        for path in sorted(version_dir.glob("*.md")):
            language = path.stem
            if not _LANGUAGE_CODE.fullmatch(language) or len(language) > MAX_LANGUAGE_LENGTH:
                raise ConsentError(
                    "file names are a language code such as en.md or es.md",
                    version=version,
                    path=path,
                )
            texts[(version, language)] = _parse(path, version, language)
    if not texts:
        raise ConsentError(f"no consent texts found under {root}", path=root)
    return texts


def render_for(
    texts: Mapping[tuple[str, str], ConsentText], version: str, language: str, organization: str
) -> ConsentText:
    """The text of ``version`` in ``language`` with ``{organization}`` replaced everywhere.

    Plain substitution, no escaping: the result is plain text (templates escape it on display).
    Raises :class:`UnknownConsentText` (a :class:`ConsentError` and a :class:`KeyError`) for a
    version or language that does not exist.
    """
    template = texts.get((version, language))
    if template is None:
        raise UnknownConsentText("no such version and language", version=version, language=language)
    name = _one_line(organization)
    if not name:
        raise ConsentError(
            "the organization name (ORGANIZATION_NAME) is empty",
            version=version,
            language=language,
            path=template.source,
            element="recipient",
        )
    if "{" in name or "}" in name:
        raise ConsentError(
            f"the organization name {name!r} may not contain braces",
            version=version,
            language=language,
            path=template.source,
            element="recipient",
        )
    if template.organization is not None:
        raise ConsentError(
            "already rendered", version=version, language=language, path=template.source
        )

    def sub(value: str) -> str:
        return value.replace(PLACEHOLDER, name)

    return replace(
        template,
        title=sub(template.title),
        sections=tuple(
            Section(
                None if s.heading is None else sub(s.heading),
                tuple(sub(p) for p in s.paragraphs),
            )
            for s in template.sections
        ),
        agreement=sub(template.agreement),
        signature_label=sub(template.signature_label),
        elements=MappingProxyType({key: sub(value) for key, value in template.elements.items()}),
        organization=name,
    )


@dataclass(frozen=True)
class ConsentRegistry:
    """What :func:`init_app` stores in ``app.extensions["intake.consent"]``."""

    templates: Mapping[tuple[str, str], ConsentText]
    active_version: str
    languages: tuple[str, ...]
    organization: str
    rendered: Mapping[tuple[str, str], ConsentText]


def init_app(app: Flask) -> None:
    """Load, check and store the texts; raise :class:`ConsentError` so the app refuses to start.

    Every text in the folder must be valid (old versions are needed to show what was signed),
    and the active version (``CONSENT_VERSION``, default :data:`ACTIVE_VERSION`) must exist,
    complete, in every language of ``LANGUAGES``.
    """
    folder = app.config.get("CONSENT_TEXTS_DIR") or PACKAGED_DIR
    version = app.config.get("CONSENT_VERSION") or ACTIVE_VERSION
    languages = _required_languages(app.config.get("LANGUAGES") or DEFAULT_LANGUAGES)
    organization = str(app.config.get("ORGANIZATION_NAME") or "")
    templates = load_texts(Path(folder))
    rendered: dict[tuple[str, str], ConsentText] = {}
    for language in languages:
        if (version, language) not in templates:
            raise ConsentError(
                f"the active version has no {language} text; every language in LANGUAGES needs one",
                version=version,
                language=language,
                path=Path(folder) / version / f"{language}.md",
            )
    for key in templates:
        text = render_for(templates, *key, organization)
        check_complete(text)
        rendered[key] = text
    app.extensions[EXTENSION] = ConsentRegistry(
        templates=MappingProxyType(dict(templates)),
        active_version=version,
        languages=languages,
        organization=_one_line(organization),
        rendered=MappingProxyType(rendered),
    )


def _required_languages(configured: Iterable[str]) -> tuple[str, ...]:
    languages = tuple(dict.fromkeys(str(code) for code in configured))
    if DEFAULT_LANGUAGE not in languages:  # active_text falls back to it
        languages += (DEFAULT_LANGUAGE,)
    return languages


def _registry() -> ConsentRegistry:
    registry = current_app.extensions.get(EXTENSION)
    if not isinstance(registry, ConsentRegistry):
        raise RuntimeError("consent.init_app(app) was not called")
    return registry


def _base_language(language: str) -> str:
    return re.split(r"[-_]", str(language).strip().lower(), maxsplit=1)[0]


def active_text(language: str) -> ConsentText:
    """The active version in ``language`` (or English), for this app's organization.

    ``es-MX`` and ``es_US`` count as ``es``; an unknown language falls back to English.
    """
    registry = _registry()
    base = _base_language(language)
    if base not in registry.languages:
        base = DEFAULT_LANGUAGE
    return registry.rendered[(registry.active_version, base)]


def signed_text(version: str, language: str, organization: str | None = None) -> ConsentText:
    """The exact text of any shipped version (current or older), as it was shown for signing.

    ``organization`` defaults to this app's ``ORGANIZATION_NAME``. The name is part of the
    signed text, so if it has changed since a submission was signed, pass the old name to
    reproduce the stored SHA-256. Raises :class:`UnknownConsentText` (also a ``KeyError``).
    """
    registry = _registry()
    if organization is None or _one_line(organization) == registry.organization:
        text = registry.rendered.get((version, language))
        if text is None:
            raise UnknownConsentText(
                "no such version and language", version=version, language=language
            )
        return text
    text = render_for(registry.templates, version, language, organization)
    check_complete(text)
    return text
