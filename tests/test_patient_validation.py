"""The rules for what a person may type (intake.patient.validation), one behaviour per test.

Pure functions: no app, no database. Messages are checked by their English wording, because
that wording is what a person reads (the Spanish page is tested in test_patient_form.py).
"""

from __future__ import annotations

import unicodedata
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intake.patient.validation import (
    Invalid,
    birthday_from_parts,
    clean_email,
    clean_name,
    clean_phone,
    clean_postal_code,
    clean_text,
    country_names,
    is_country,
    printable,
    years_before,
)

EMPTY = object()  # clean_name's empty message, recognised by identity
TODAY = date(2024, 6, 15)  # a fixed day, so no test depends on when it runs


def refusal(call: object, *args: object, **kwargs: object) -> str:
    """The message a person would read when ``call`` refuses the value."""
    assert callable(call)
    with pytest.raises(Invalid) as caught:
        call(*args, **kwargs)
    return str(caught.value.message)


def name(raw: str) -> str:
    return clean_name(raw, empty_message=EMPTY)


def name_refusal(raw: str) -> object:
    with pytest.raises(Invalid) as caught:
        name(raw)
    return caught.value.message


# ---------------------------------------------------------------------------- clean_text

CONTROL = "Remove any special characters that were pasted in"


def test_text_is_stored_composed_however_it_was_typed() -> None:
    cleaned = clean_text("Jose\u0301", max_length=10)
    assert cleaned == "José"
    assert len(cleaned) == 4
    assert unicodedata.is_normalized("NFC", cleaned)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ana  ", "Ana"),
        ("\tAna\n", "Ana"),
        ("\u00a0Ana\u3000", "Ana"),  # no-break and ideographic spaces too
        ("Ana María", "Ana María"),  # inner spaces are the person's own
    ],
)
def test_text_is_trimmed(raw: str, expected: str) -> None:
    assert clean_text(raw, max_length=20) == expected


def test_length_limit_is_inclusive() -> None:
    assert clean_text("a" * 10, max_length=10) == "a" * 10
    assert refusal(clean_text, "a" * 11, max_length=10) == "Use 10 characters or fewer"


def test_length_counts_characters_after_composing_and_trimming() -> None:
    # Ten accented letters typed decomposed are 20 code points, but ten characters.
    assert clean_text("e\u0301" * 10, max_length=10) == "é" * 10
    assert clean_text("   " + "a" * 10 + "   ", max_length=10) == "a" * 10


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_nul_is_refused_anywhere(where: str) -> None:
    raw = {"start": "\x00Ana", "middle": "A\x00na", "end": "Ana\x00"}[where]
    assert refusal(clean_text, raw, max_length=20) == CONTROL
    assert refusal(clean_text, raw, max_length=20, multiline=True) == CONTROL


@pytest.mark.parametrize(
    "char",
    [chr(code) for code in [*range(0x01, 0x20), 0x7F, *range(0x80, 0xA0)]],
    ids=lambda char: f"U+{ord(char):04X}",
)
def test_c0_and_c1_controls_inside_text_are_refused(char: str) -> None:
    assert refusal(clean_text, f"An{char}a", max_length=20) == CONTROL


@pytest.mark.parametrize(
    "char",
    [
        *"\u202a\u202b\u202c\u202d\u202e",  # embeddings and overrides (RLO, LRO…)
        *"\u2066\u2067\u2068\u2069",  # isolates
        "\u200e",  # LRM
        "\u200f",  # RLM
        "\u061c",  # Arabic letter mark
        "\ufeff",  # byte-order mark / zero-width no-break space
    ],
    ids=lambda char: f"U+{ord(char):04X}",
)
@pytest.mark.parametrize("multiline", [False, True])
def test_direction_controls_and_bom_are_refused(char: str, multiline: bool) -> None:
    for raw in (f"{char}Ana", f"Ana{char}López", f"Ana{char}"):
        assert refusal(clean_text, raw, max_length=20, multiline=multiline) == CONTROL


@pytest.mark.parametrize(
    "char", ["\ue000", "\U000f0000", "\u0378"], ids=["private-use", "plane-15", "unassigned"]
)
def test_private_use_and_unassigned_characters_are_refused(char: str) -> None:
    assert refusal(clean_text, f"Ana{char}", max_length=20) == CONTROL


@pytest.mark.parametrize("line_break", ["\n", "\r\n", "\r", "\u2028", "\u2029"])
def test_line_breaks_only_where_multiline(line_break: str) -> None:
    raw = f"first{line_break}second"
    assert refusal(clean_text, raw, max_length=40) == CONTROL
    assert clean_text(raw, max_length=40, multiline=True) == "first\nsecond"


def test_multiline_admits_line_breaks_and_no_other_control() -> None:
    assert refusal(clean_text, "first\n\tsecond", max_length=40, multiline=True) == CONTROL
    assert refusal(clean_text, "first\x0bsecond", max_length=40, multiline=True) == CONTROL
    assert clean_text("a\r\n\r\nb", max_length=10, multiline=True) == "a\n\nb"


def test_controls_that_count_as_space_are_trimmed_at_the_ends() -> None:
    """Python's strip() treats \\x1c-\\x1f and NEL as space: trimmed away, never stored."""
    assert clean_text("\x1cAna\x1f\x85", max_length=10) == "Ana"


FORBIDDEN = {"Cc", "Cs", "Co", "Cn"}
HIDDEN = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")


@given(raw=st.text(max_size=60), multiline=st.booleans())
def test_whatever_is_typed_the_kept_text_is_clean(raw: str, multiline: bool) -> None:
    try:
        cleaned = clean_text(raw, max_length=40, multiline=multiline)
    except Invalid:
        return
    assert len(cleaned) <= 40
    assert cleaned == cleaned.strip()
    assert unicodedata.is_normalized("NFC", cleaned)
    for char in cleaned:
        if multiline and char == "\n":
            continue
        assert unicodedata.category(char) not in FORBIDDEN, repr(char)
        assert char not in HIDDEN, repr(char)
        assert char not in "\u2028\u2029", repr(char)


def test_printable_drops_only_what_html_cannot_carry() -> None:
    assert printable("A\x00n\u202ea\ufeff") == "Ana"
    assert printable("line one\r\nline two") == "line one\r\nline two"
    assert printable("José 王 😀") == "José 王 😀"


# ---------------------------------------------------------------------------- clean_name


@pytest.mark.parametrize(
    "typed",
    [
        "José María López",
        "Zoë Ñúñez-García",
        "O'Brien",
        "O’Brien",
        "Anne-Marie d’Arc",
        "Jean-Luc Picard Jr.",
        "Gal·la Puig",  # Catalan middle dot
        "Ka\u02bbiulani",  # the okina is a letter (U+02BB)
        "Nguyễn Văn An",
        "Łukasz Żółć",
        "محمد عَبْد الله",  # Arabic with harakat (combining marks)
        "שָׁלוֹם כֹּהֵן",  # Hebrew with niqqud
        "王小明",
        "김민준",
        "अनुष्का शर्मा",  # Devanagari: vowel signs and virama are combining marks
        "Ἀλέξανδρος",
    ],
)
def test_names_in_any_script_are_accepted_as_typed(typed: str) -> None:
    assert name(typed) == unicodedata.normalize("NFC", typed)


def test_name_typed_decomposed_is_kept_composed() -> None:
    assert name("Jose\u0301 Nu\u0301n\u0303ez") == "José Núñez"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("  Ana   María  López ", "Ana María López"),
        ("Ana\u00a0María", "Ana María"),
        ("Ana \u3000 María", "Ana María"),
        ("Ana\u2003María", "Ana María"),
    ],
)
def test_whitespace_inside_a_name_is_collapsed_to_one_space(typed: str, stored: str) -> None:
    assert name(typed) == stored


NAME_RULE = "Names can only include letters, spaces, hyphens, apostrophes and periods"


@pytest.mark.parametrize(
    "typed",
    [
        "Ana 2",
        "R2D2",
        "Ana \uff11",  # fullwidth digit one
        "Ana 😀",
        "Ana 👍🏽",
        "<script>alert(1)</script>",
        "Robert'); DROP TABLE submissions;--",
        "' OR 1=1 --",
        "ana@example.org",
        "Ana_López",
        "Ana/López",
        "López, Ana",
        "Ana\u200bLópez",  # zero-width space
    ],
)
def test_names_with_digits_symbols_or_emoji_are_refused(typed: str) -> None:
    assert name_refusal(typed) == NAME_RULE


@pytest.mark.parametrize("typed", ["", "   ", "'", "-", "...", "'-.’", "\u0301"])
def test_a_name_without_letters_gets_the_fields_own_empty_message(typed: str) -> None:
    assert name_refusal(typed) is EMPTY


@pytest.mark.parametrize("typed", ["Ana\x00", "Ana\u202eLópez", "An\ta", "Ana\u2028López"])
def test_names_with_control_characters_are_refused(typed: str) -> None:
    assert str(name_refusal(typed)) == CONTROL


def test_name_length_limit_is_120() -> None:
    assert name("A" * 120) == "A" * 120
    assert str(name_refusal("A" * 121)) == "Use 120 characters or fewer"


# ---------------------------------------------------------------------------- clean_email

EMAIL_FORMAT = "Enter an email address in the correct format, like name@example.com"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("ana@example.org", "ana@example.org"),
        ("  ana@example.org  ", "ana@example.org"),
        ("ana.lopez+trials@example.org", "ana.lopez+trials@example.org"),
        ("Ana+Trials@EXAMPLE.Org", "Ana+Trials@example.org"),  # the domain is lower-cased
        ("josé@exämple.org", "josé@exämple.org"),
        ("jose\u0301@exa\u0308mple.org", "josé@exämple.org"),  # composed
        ("ana@bücher.de", "ana@bücher.de"),
        ("ana@xn--bcher-kva.de", "ana@bücher.de"),  # punycode shown as people read it
        ("用户@例子.广告", "用户@例子.广告"),
    ],
)
def test_valid_addresses_are_accepted_and_normalized(typed: str, stored: str) -> None:
    assert clean_email(typed) == stored


@pytest.mark.parametrize(
    "typed",
    [
        "ana.example.org",
        "ana@",
        "@example.org",
        "ana @example.org",
        "ana@exa mple.org",
        "ana..lopez@example.org",
        ".ana@example.org",
        "ana.@example.org",
        "ana@example..org",
        "ana@example",
        "ana@localhost",
        "ana@[127.0.0.1]",
        "Ana <ana@example.org>",
        "ana@example.org, bo@example.org",
        "<script>alert(1)</script>@example.org",
        "' OR 1=1 --@example.org",
    ],
)
def test_malformed_addresses_are_refused(typed: str) -> None:
    assert refusal(clean_email, typed) == EMAIL_FORMAT


def test_addresses_with_control_characters_are_refused() -> None:
    assert refusal(clean_email, "ana\x00@example.org") == CONTROL
    assert refusal(clean_email, "ana\u202e@example.org") == CONTROL


def test_address_length_limit_is_254() -> None:
    domain = f"{'b' * 63}.{'c' * 63}.{'d' * 57}.org"
    longest = f"{'a' * 64}@{domain}"
    assert len(longest) == 254
    assert clean_email(longest) == longest
    too_long = f"{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 58}.org"
    assert len(too_long) == 255
    assert refusal(clean_email, too_long) == "Use 254 characters or fewer"


# ---------------------------------------------------------------------------- clean_phone

PHONE_FOR_COUNTRY = "Enter a phone number that is valid for the country you chose"
PHONE_CHARACTERS = "Enter a phone number using only digits, spaces, +, ( and )"


@pytest.mark.parametrize(
    "typed",
    [
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "4155552671",
        "415 555 2671",
        "1 (415) 555-2671",
        "1-415-555-2671",
        "+1 415 555 2671",
        "+14155552671",
        "  (415) 555-2671  ",
    ],
)
def test_us_numbers_in_every_usual_format_are_stored_as_e164(typed: str) -> None:
    assert clean_phone(typed, "US") == "+14155552671"


def test_a_number_with_its_own_country_code_is_accepted_whatever_the_country() -> None:
    assert clean_phone("+44 20 7946 0958", "US") == "+442079460958"
    assert clean_phone("+52 55 1234 5678", "US") == "+525512345678"
    assert clean_phone("+1 415 555 2671", "GB") == "+14155552671"


def test_a_national_number_is_read_for_the_chosen_country() -> None:
    assert clean_phone("020 7946 0958", "GB") == "+442079460958"


def test_a_us_number_without_plus_one_is_refused_when_the_country_is_gb() -> None:
    """Decided: the number is read for the country chosen. A US number typed without +1 is
    not a UK number, so the person is asked to fix it (the hint says to add the country code),
    rather than the form guessing a country they did not choose."""
    assert refusal(clean_phone, "(415) 555-2671", "GB") == PHONE_FOR_COUNTRY


@pytest.mark.parametrize(
    "typed",
    ["555-267", "415 555 267", "415 555 2671 2671", "+1", "+", "((((", "000 000 0000"],
)
def test_numbers_too_short_too_long_or_impossible_are_refused(typed: str) -> None:
    assert refusal(clean_phone, typed, "US") == PHONE_FOR_COUNTRY


def test_phone_length_limit_is_32() -> None:
    assert refusal(clean_phone, "1" * 33, "US") == "Use 32 characters or fewer"


@pytest.mark.parametrize(
    "typed",
    [
        "415-CALL-NOW",
        "415 555 2671 ext 3",
        "four one five",
        "<script>",
        "' OR 1=1 --",
        "٤١٥٥٥٥٢٦٧١",  # Arabic-Indic digits
    ],
)
def test_numbers_with_letters_or_symbols_are_refused(typed: str) -> None:
    assert refusal(clean_phone, typed, "US") == PHONE_CHARACTERS


# ---------------------------------------------------------------------------- clean_postal_code

POSTAL_FOR_COUNTRY = "Enter a ZIP or postal code that is valid for the country you chose"


@pytest.mark.parametrize(
    ("country", "typed", "stored"),
    [
        ("US", "94110", "94110"),
        ("US", " 94110 ", "94110"),
        ("US", "94110-1234", "94110-1234"),
        ("CA", "K1A 0B1", "K1A 0B1"),
        ("CA", "K1A0B1", "K1A 0B1"),
        ("CA", "k1a 0b1", "K1A 0B1"),
        ("CA", "k1a0b1", "K1A 0B1"),
        ("GB", "SW1A 1AA", "SW1A 1AA"),
        ("GB", "sw1a1aa", "SW1A 1AA"),
        ("GB", "M1 1AE", "M1 1AE"),
        ("GB", "GIR0AA", "GIR 0AA"),
        ("MX", "06700", "06700"),
        ("ES", "01001", "01001"),
        ("ES", "28013", "28013"),
        ("ES", "52001", "52001"),
        ("NL", "1234ab", "1234 AB"),
        ("SE", "11455", "114 55"),
        ("IE", "d02x285", "D02 X285"),
        ("BR", "01310100", "01310-100"),
        ("JP", "100-0001", "100-0001"),
        ("JP", "1000001", "100-0001"),
    ],
)
def test_postal_codes_are_checked_by_country_and_stored_one_way(
    country: str, typed: str, stored: str
) -> None:
    assert clean_postal_code(typed, country) == stored


@pytest.mark.parametrize(
    ("country", "typed"),
    [
        ("US", "9411"),
        ("US", "941101"),
        ("US", "94110-12"),
        ("US", "K1A 0B1"),  # a Canadian code with the US chosen
        ("CA", "90210"),  # a US ZIP with Canada chosen
        ("CA", "D1A 0B1"),  # D is never a first letter in Canada
        ("MX", "0670"),
        ("MX", "K1A 0B1"),
        ("ES", "00123"),  # provinces are 01-52
        ("ES", "53001"),
        ("GB", "90210"),
        ("US", "٩٤١١٠"),  # Arabic-Indic digits
        ("US", "\uff19\uff14\uff11\uff11\uff10"),  # fullwidth digits
        ("US", "<script>"),
        ("US", "' OR 1=1 --"),
    ],
)
def test_postal_codes_that_do_not_fit_the_country_are_refused(country: str, typed: str) -> None:
    assert refusal(clean_postal_code, typed, country) == POSTAL_FOR_COUNTRY


def test_a_country_without_postal_codes_may_leave_it_empty() -> None:
    assert clean_postal_code("", "AE") == ""
    assert clean_postal_code("   ", "HK") == ""


@pytest.mark.parametrize("country", ["US", "CA", "GB", "MX", "ES", "AM"])
def test_other_countries_need_a_postal_code(country: str) -> None:
    assert refusal(clean_postal_code, "  ", country) == "Enter a ZIP or postal code"


@pytest.mark.parametrize(
    ("country", "typed", "stored"),
    [("AM", "0010", "0010"), ("RU", "101000", "101000"), ("AE", "12345", "12345")],
)
def test_countries_without_a_pattern_get_the_generic_rule(
    country: str, typed: str, stored: str
) -> None:
    assert clean_postal_code(typed, country) == stored


@pytest.mark.parametrize("typed", ["1", "<b>1</b>", "12_34", "A" * 13])
def test_the_generic_rule_still_refuses_junk(typed: str) -> None:
    assert refusal(clean_postal_code, typed, "AM") == POSTAL_FOR_COUNTRY


def test_postal_code_length_limit_is_16() -> None:
    assert refusal(clean_postal_code, "1" * 17, "US") == "Use 16 characters or fewer"
    assert refusal(clean_postal_code, "94\x00110", "US") == CONTROL


# ---------------------------------------------------------------------------- birthday


def born(day: str, month: str, year: str, today: date = TODAY) -> date:
    return birthday_from_parts(day, month, year, today=today)


def birthday_refusal(day: str, month: str, year: str, today: date = TODAY) -> str:
    return refusal(birthday_from_parts, day, month, year, today=today)


def parts(day: date) -> tuple[str, str, str]:
    return str(day.day), str(day.month), str(day.year)


def test_a_real_past_date_is_accepted() -> None:
    assert born("14", "7", "1968") == date(1968, 7, 14)
    assert born(" 07 ", "03", "1980") == date(1980, 3, 7)


@pytest.mark.parametrize(
    ("day", "month", "year", "message"),
    [
        ("", "", "", "Enter the date of birth"),
        (" ", " ", " ", "Enter the date of birth"),
        ("", "7", "1968", "Date of birth must include a day"),
        ("14", "", "1968", "Date of birth must include a month"),
        ("14", "7", "", "Date of birth must include a year"),
        ("14", " ", "", "Date of birth must include a month"),
        ("", "", "1968", "Date of birth must include a day"),
    ],
)
def test_each_missing_part_is_named(day: str, month: str, year: str, message: str) -> None:
    assert birthday_refusal(day, month, year) == message


@pytest.mark.parametrize(
    ("day", "month", "year"),
    [
        ("31", "2", "1980"),
        ("30", "2", "1980"),
        ("29", "2", "2023"),  # not a leap year
        ("29", "2", "1905"),
        ("31", "4", "1980"),
        ("32", "1", "1980"),
        ("0", "1", "1980"),
        ("1", "0", "1980"),
        ("1", "13", "1980"),
        ("9" * 30, "1", "1980"),  # once an OverflowError: a 500
        ("1", "9" * 30, "1980"),
        ("9" * 5000, "1", "1980"),
        ("1", "1", "0000"),
    ],
)
def test_dates_that_do_not_exist_are_refused(day: str, month: str, year: str) -> None:
    assert birthday_refusal(day, month, year) == "Date of birth must be a real date"


def test_29_february_of_a_leap_year_is_a_real_date() -> None:
    assert born("29", "2", "2024") == date(2024, 2, 29)
    assert born("29", "2", "2000") == date(2000, 2, 29)


@pytest.mark.parametrize("year", ["80", "680", "196", "19680", "01968"])
def test_the_year_needs_four_digits(year: str) -> None:
    assert birthday_refusal("14", "7", year) == "Year must include 4 numbers"


@pytest.mark.parametrize(
    ("day", "month", "year"),
    [
        ("١٤", "7", "1968"),  # Arabic-Indic digits
        ("14", "\u0667", "1968"),  # Arabic-Indic seven
        ("14", "7", "१९६८"),  # Devanagari digits
        ("\uff11\uff14", "7", "1968"),  # fullwidth digits
        ("14th", "7", "1968"),
        ("14", "July", "1968"),
        ("-1", "7", "1968"),
        ("+5", "7", "1968"),
        ("1.5", "7", "1968"),
        ("²", "7", "1968"),
    ],
)
def test_parts_must_be_plain_numbers(day: str, month: str, year: str) -> None:
    """Decided (as the rule is written): only ASCII digits. Other digits get a clear message
    asking for numbers rather than being read, so what is stored is what was checked."""
    assert birthday_refusal(day, month, year) == "Date of birth must be a real date, using numbers"


def test_today_is_accepted_and_tomorrow_is_not() -> None:
    assert born(*parts(TODAY)) == TODAY
    tomorrow = TODAY + timedelta(days=1)
    assert birthday_refusal(*parts(tomorrow)) == "Date of birth must be today or in the past"


def test_exactly_120_years_ago_is_accepted_and_a_day_more_is_not() -> None:
    oldest = date(1904, 6, 15)
    assert born(*parts(oldest)) == oldest
    too_old = oldest - timedelta(days=1)
    assert birthday_refusal(*parts(too_old)) == "Date of birth must be within the last 120 years"
    assert birthday_refusal("1", "1", "1800") == "Date of birth must be within the last 120 years"


def test_the_120_year_limit_on_29_february() -> None:
    leap_day = date(2024, 2, 29)
    assert born("29", "2", "1904", today=leap_day) == date(1904, 2, 29)
    assert birthday_refusal("28", "2", "1904", today=leap_day) == (
        "Date of birth must be within the last 120 years"
    )
    # 1905 has no 29 February: the oldest birthday allowed on 28 Feb 2025 is 28 Feb 1905.
    assert born("28", "2", "1905", today=date(2025, 2, 28)) == date(1905, 2, 28)


@pytest.mark.parametrize(
    ("today", "years", "expected"),
    [
        (date(2024, 2, 29), 1, date(2023, 2, 28)),
        (date(2024, 2, 29), 4, date(2020, 2, 29)),
        (date(2024, 2, 29), 18, date(2006, 2, 28)),
        (date(2024, 2, 29), 120, date(1904, 2, 29)),
        (date(2024, 3, 1), 1, date(2023, 3, 1)),
        (date(2024, 6, 15), 18, date(2006, 6, 15)),
    ],
)
def test_years_before(today: date, years: int, expected: date) -> None:
    assert years_before(today, years) == expected


# ---------------------------------------------------------------------------- countries


@pytest.mark.parametrize("language", ["en", "es"])
def test_countries_are_sorted_by_name_ignoring_accents_and_case(language: str) -> None:
    names = [label for _code, label in country_names(language)]
    folded = [without_accents(label).casefold() for label in names]
    assert folded == sorted(folded)
    assert len(names) > 200


def without_accents(label: str) -> str:
    decomposed = unicodedata.normalize("NFKD", label)
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def test_countries_are_named_in_each_language() -> None:
    english, spanish = dict(country_names("en")), dict(country_names("es"))
    assert english["US"] == "United States"
    assert spanish["US"] == "Estados Unidos"
    assert english["MX"] == "Mexico"
    assert spanish["MX"] == "México"
    assert english["ES"] == "Spain"
    assert spanish["ES"] == "España"
    assert set(english) == set(spanish)


@pytest.mark.parametrize(
    ("language", "first", "second"),
    [
        ("en", "AX", "AL"),  # Åland Islands, Albania: not after Azerbaijan
        ("es", "BE", "BZ"),  # Bélgica, Belice
        ("es", "TN", "TM"),  # Túnez, Turkmenistán
    ],
)
def test_an_accented_name_sorts_with_its_letter(language: str, first: str, second: str) -> None:
    codes = [code for code, _label in country_names(language)]
    assert codes.index(first) < codes.index(second)


@pytest.mark.parametrize("code", ["EU", "EZ", "UN", "QO", "ZZ", "001", "419", "150", "us", ""])
def test_groupings_and_unknown_codes_are_not_countries(code: str) -> None:
    assert not is_country(code)
    for language in ("en", "es"):
        assert code not in dict(country_names(language))


def test_every_choice_is_a_two_letter_country() -> None:
    for code, _label in country_names("en"):
        assert len(code) == 2
        assert code.isascii()
        assert code.isalpha()
        assert code.isupper()
        assert is_country(code)
