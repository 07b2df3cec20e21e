"""The form's two long ``<select>`` lists, rendered once per language and process.

The cancer types (about 100, in groups) and the countries (about 240) are the same on every
page in one language; only which option is ``selected`` differs. Rendering them through Jinja
on every GET cost about a third of the form page, so each list is built here once (escaped),
and a page marks its selected option by replacing that option's unique opening tag.
"""

from __future__ import annotations

from functools import cache

from markupsafe import Markup, escape

from intake.patient.validation import country_names
from intake.vocabulary import vocabulary


def _option(value: str, label: str) -> str:
    return f'<option value="{escape(value)}">{escape(label)}</option>'


def _opening(value: str) -> str:
    return f'<option value="{escape(value)}">'


@cache
def _cancer_list(language: str) -> tuple[str, frozenset[str]]:
    lines = []
    for group, types in vocabulary().grouped():
        lines.append(f'<optgroup label="{escape(group.label(language))}">')
        lines.extend(_option(cancer.code, cancer.label(language)) for cancer in types)
        lines.append("</optgroup>")
    codes = frozenset(code for code in vocabulary().types)
    return "\n".join(lines), codes


@cache
def _country_list(language: str) -> tuple[str, frozenset[str]]:
    pairs = country_names(language)
    return "\n".join(_option(code, name) for code, name in pairs), frozenset(c for c, _ in pairs)


def _with_selected(markup: str, values: frozenset[str], selected: str) -> Markup:
    """``markup`` with the option whose value is exactly ``selected`` marked, if there is one."""
    if selected in values:
        opening = _opening(selected)
        markup = markup.replace(opening, f"{opening[:-1]} selected>", 1)
    return Markup(markup)  # noqa: S704  # nosec B704  # built from escaped values and labels


def cancer_options(language: str, selected: str) -> Markup:
    """The ``<optgroup>``s of cancer types in ``language``, ``selected`` marked."""
    markup, codes = _cancer_list(language)
    return _with_selected(markup, codes, selected)


def country_options(language: str, selected: str) -> Markup:
    """The country ``<option>``s in ``language``, sorted by name, ``selected`` marked."""
    markup, codes = _country_list(language)
    return _with_selected(markup, codes, selected)
