"""Rules for what a person may type: pure functions, no Flask, each raising ``Invalid``.

Every rule returns the cleaned value (NFC-normalized, trimmed, canonical form) so the stored
record is consistent however it was typed.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from functools import cache

import phonenumbers
from babel import Locale
from email_validator import EmailNotValidError, validate_email
from flask_babel import lazy_gettext as _l

MAX_NAME = 120
MAX_SHORT_TEXT = 200
MAX_EMAIL = 254
MAX_PHONE = 32
MAX_POSTAL = 16
OLDEST_AGE_YEARS = 120
ADULT_AGE_YEARS = 18

# Characters that reorder or hide text: legitimate right-to-left names never need them typed,
# and they are how a name is made to display as something else.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
NAME_PUNCTUATION = frozenset(" '\u2019-.\u00b7\u2010\u2011")
LINE_BREAKS = re.compile("\r\n?|[\u2028\u2029]")


class Invalid(ValueError):
    """A value a person typed breaks a rule; ``message`` is shown to them (translated)."""

    def __init__(self, message: object) -> None:
        super().__init__("invalid input")  # never the value itself
        self.message = message


def _is_forbidden_char(char: str) -> bool:
    """Control, surrogate, private-use, unassigned and direction-override characters."""
    if char in BIDI_CONTROLS or char == "\ufeff":
        return True
    return unicodedata.category(char) in {"Cc", "Cs", "Co", "Cn"}


def clean_text(raw: str, *, max_length: int, multiline: bool = False) -> str:
    """NFC, trimmed, no control or direction-override characters, within ``max_length``.

    ``multiline`` admits line breaks (as ``\n``) and nothing else of the control range.
    """
    # Every line break becomes \n: rejected below unless ``multiline`` (U+2028/2029 included).
    text = unicodedata.normalize("NFC", LINE_BREAKS.sub("\n", raw)).strip()
    for char in text:
        if multiline and char == "\n":
            continue
        if _is_forbidden_char(char):
            raise Invalid(_l("Remove any special characters that were pasted in"))
    if len(text) > max_length:
        raise Invalid(_l("Use %(count)d characters or fewer", count=max_length))
    return text


def printable(raw: str) -> str:
    """A value safe to put back in a form: the same text minus characters HTML cannot carry."""
    if raw.isprintable():  # the usual case: every character it drops is non-printable
        return raw
    return "".join(char for char in raw if char in "\r\n" or not _is_forbidden_char(char))


def clean_name(raw: str, *, empty_message: object) -> str:
    """Any script, with spaces, apostrophes, hyphens and dots; no digits, symbols or emoji."""
    name = clean_text(raw, max_length=MAX_NAME)
    if not name:
        raise Invalid(empty_message)
    name = " ".join(name.split())
    for char in name:
        if char in NAME_PUNCTUATION:
            continue
        if unicodedata.category(char)[0] not in {"L", "M"}:
            raise Invalid(
                _l("Names can only include letters, spaces, hyphens, apostrophes and periods")
            )
    if not any(unicodedata.category(char).startswith("L") for char in name):
        raise Invalid(empty_message)
    return name


def clean_email(raw: str) -> str:
    text = clean_text(raw, max_length=MAX_EMAIL)
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        raise Invalid(
            _l("Enter an email address in the correct format, like name@example.com")
        ) from None
    return str(checked.normalized)


def clean_phone(raw: str, country: str) -> str:
    """E.164, checked for ``country`` unless the number starts with its own +country code."""
    text = clean_text(raw, max_length=MAX_PHONE)
    if not re.fullmatch(r"[0-9+()\-. ]+", text):
        raise Invalid(_l("Enter a phone number using only digits, spaces, +, ( and )"))
    try:
        number = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise Invalid(_l("Enter a phone number that is valid for the country you chose"))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# Postal codes by country (upper-cased, inner spaces collapsed before matching). Countries not
# listed here get the generic rule; countries in NO_POSTAL_CODES may leave the field empty.
POSTAL_PATTERNS: dict[str, str] = {
    "US": r"\d{5}(-\d{4})?",
    "PR": r"00[6-9]\d{2}(-\d{4})?",
    "VI": r"008\d{2}(-\d{4})?",
    "GU": r"969\d{2}(-\d{4})?",
    "CA": r"[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d",
    "MX": r"\d{5}",
    "GB": r"(GIR ?0AA|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2})",
    "ES": r"(0[1-9]|[1-4]\d|5[0-2])\d{3}",
    "DE": r"\d{5}",
    "FR": r"\d{5}",
    "IT": r"\d{5}",
    "PT": r"\d{4}-\d{3}",
    "NL": r"\d{4} ?[A-Z]{2}",
    "BE": r"\d{4}",
    "CH": r"\d{4}",
    "AT": r"\d{4}",
    "IE": r"[AC-FHKNPRTV-Y]\d[\dW] ?[0-9AC-FHKNPRTV-Y]{4}",
    "SE": r"\d{3} ?\d{2}",
    "NO": r"\d{4}",
    "DK": r"\d{4}",
    "FI": r"\d{5}",
    "PL": r"\d{2}-\d{3}",
    "BR": r"\d{5}-?\d{3}",
    "AR": r"([A-Z]\d{4}[A-Z]{3}|\d{4})",
    "CL": r"\d{7}",
    "CO": r"\d{6}",
    "PE": r"\d{5}",
    "EC": r"\d{6}",
    "VE": r"\d{4}",
    "UY": r"\d{5}",
    "PY": r"\d{4}",
    "DO": r"\d{5}",
    "GT": r"\d{5}",
    "HN": r"\d{5}",
    "NI": r"\d{5}",
    "CR": r"\d{5}",
    "SV": r"\d{4}",
    "PA": r"\d{4}",
    "CU": r"\d{5}",
    "AU": r"\d{4}",
    "NZ": r"\d{4}",
    "IN": r"[1-9]\d{5}",
    "CN": r"\d{6}",
    "JP": r"\d{3}-?\d{4}",
    "KR": r"\d{5}",
    "PH": r"\d{4}",
    "IL": r"\d{7}",
    "ZA": r"\d{4}",
}
NO_POSTAL_CODES = frozenset(
    re.findall(
        r"[A-Z]{2}",
        "AE AG AO AW BF BI BJ BO BS BW BZ CD CF CG CI CK CM DJ DM ER FJ GA GD GH GM GQ GY HK "
        "JM KI KM KN KP LC ML MO MR MW NR NU QA RW SB SC SL SR ST SY TD TG TK TL TO TV UG VU "
        "YE ZW ",
    )
)
GENERIC_POSTAL = r"[A-Z0-9][A-Z0-9 -]{1,10}[A-Z0-9]"
# Codes whose separator is optional when typed: stored one way, the separator placed before
# the last ``tail`` characters ("k1a0b1" and "K1A 0B1" are both kept as "K1A 0B1").
POSTAL_SEPARATORS: dict[str, tuple[int, str]] = {
    "CA": (3, " "),
    "GB": (3, " "),
    "IE": (4, " "),
    "NL": (2, " "),
    "SE": (2, " "),
    "BR": (3, "-"),
    "JP": (4, "-"),
}


def clean_postal_code(raw: str, country: str) -> str:
    text = " ".join(clean_text(raw, max_length=MAX_POSTAL).upper().split())
    if not text:
        if country in NO_POSTAL_CODES:
            return ""
        raise Invalid(_l("Enter a ZIP or postal code"))
    pattern = POSTAL_PATTERNS.get(country, GENERIC_POSTAL)
    # ASCII: \d must not match Arabic-Indic or fullwidth digits, which would be stored as typed.
    if not re.fullmatch(pattern, text, re.ASCII):
        raise Invalid(_l("Enter a ZIP or postal code that is valid for the country you chose"))
    if country in POSTAL_SEPARATORS:
        tail, separator = POSTAL_SEPARATORS[country]
        compact = re.sub(r"[ -]", "", text)
        text = f"{compact[:-tail]}{separator}{compact[-tail:]}"
    return text


@cache
def country_names(language: str) -> tuple[tuple[str, str], ...]:
    """Countries people can choose, as (ISO code, name in ``language``), sorted by name."""
    territories = Locale.parse(language).territories
    codes = {
        code
        for code in phonenumbers.SUPPORTED_REGIONS
        if code in territories and len(code) == 2 and code.isalpha()
    }
    names = [(code, str(territories[code])) for code in codes]
    return tuple(sorted(names, key=lambda pair: _sort_key(pair[1])))


def _sort_key(label: str) -> str:
    """Accents and case ignored: "Bélgica" sorts before "Belice", "Åland" with the A's.

    The accents must be dropped, not only decomposed: a combining mark sorts after every
    letter, which put "Bélgica" after "Belice" and "Túnez" after "Turquía".
    """
    decomposed = unicodedata.normalize("NFKD", label)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


@cache
def _country_codes() -> frozenset[str]:
    return frozenset(code for code, _name in country_names("en"))


def is_country(code: str) -> bool:
    return code in _country_codes()


def birthday_from_parts(day: str, month: str, year: str, *, today: date) -> date:
    """The memorable-date rules: all three parts, a real date, not in the future, age ≤ 120."""
    parts = {"day": day.strip(), "month": month.strip(), "year": year.strip()}
    missing = [name for name, value in parts.items() if not value]
    if len(missing) == 3:
        raise Invalid(_l("Enter the date of birth"))
    if missing:
        raise Invalid(_MISSING_PART[missing[0]])
    if not all(value.isascii() and value.isdigit() for value in parts.values()):
        raise Invalid(_l("Date of birth must be a real date, using numbers"))
    if len(parts["year"]) != 4:
        raise Invalid(_l("Year must include 4 numbers"))
    try:
        born = date(int(parts["year"]), int(parts["month"]), int(parts["day"]))
    except (ValueError, OverflowError):  # OverflowError: a day or month of many digits
        raise Invalid(_l("Date of birth must be a real date")) from None
    if born > today:
        raise Invalid(_l("Date of birth must be today or in the past"))
    if born < years_before(today, OLDEST_AGE_YEARS):
        raise Invalid(
            _l("Date of birth must be within the last %(years)d years", years=OLDEST_AGE_YEARS)
        )
    return born


_MISSING_PART = {
    "day": _l("Date of birth must include a day"),
    "month": _l("Date of birth must include a month"),
    "year": _l("Date of birth must include a year"),
}


def years_before(today: date, years: int) -> date:
    """The same calendar day ``years`` earlier (28 February for a 29 February)."""
    try:
        return today.replace(year=today.year - years)
    except ValueError:
        return today.replace(year=today.year - years, day=28)
