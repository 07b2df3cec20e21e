"""The intake form: fields as sent, and the rules that turn them into a clean submission.

Fields are plain strings on purpose: every rule lives in :mod:`intake.patient.validation`, runs
on the server, and reports in page order, so the error summary matches the page. CSRF is
checked for every POST by the app-wide ``CSRFProtect``; the templates render the token.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlsplit

from flask import has_request_context, request
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField

from intake.patient import validation as rules
from intake.patient.validation import Invalid
from intake.submissions import age_in_years
from intake.vocabulary import OTHER_CODE, vocabulary

FILLERS = ("self", "parent", "representative")
SIGNER_ROLES = {
    "self": "self",
    "parent": "parent_guardian",
    "representative": "legal_representative",
}
CONTACT_METHODS = ("email", "phone", "text")
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{32,64}")
SOURCE_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,79}")
MAX_SOURCE = 300
HONEYPOT_FIELD = "website"


def new_form_token() -> str:
    """A rendered form's idempotency token (see ``IntakeForm.ensure_token``)."""
    return secrets.token_urlsafe(32)


# Page order: the error summary lists problems in the order a person meets them.
FIELD_ORDER = (
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


@dataclass(frozen=True)
class CleanSubmission:
    """What a valid form says, cleaned: plaintext facts and the fields that get sealed."""

    signer_role: str
    cancer_type: str
    birthday: date
    email: str | None
    sealed_fields: dict[str, Any]


class TickBox(BooleanField):
    """A checkbox ticked only by the value it sends ("y").

    ``BooleanField`` counts every value but "false" and "" as ticked, so a crafted "agree=n",
    "off" or "0" would be recorded as agreement the person never gave.
    """

    def process_formdata(self, valuelist: Sequence[Any]) -> None:
        self.data = bool(valuelist) and valuelist[0] == "y"


class IntakeForm(FlaskForm):
    class Meta:
        csrf = False  # the app-wide CSRFProtect checks every POST before the view runs

        def get_translations(self, form: Any) -> None:
            """No WTForms catalog: every label and message on the page comes from our own.

            Flask-WTF would read and parse WTForms' own catalog from disk on every request,
            only to translate default field labels that the templates never show.
            """

    def __init__(self, **kwargs: Any) -> None:
        # Only the request's text fields. Flask-WTF would also read file parts and a JSON
        # body, whose values are not strings (a file, a number, a list): a 500 on every rule.
        posted = has_request_context() and request.method == "POST"
        super().__init__(formdata=request.form if posted else None, **kwargs)

    filler = StringField()
    representative_authority = StringField()
    cancer_type = StringField()
    cancer_other = StringField()
    birth_day = StringField()
    birth_month = StringField()
    birth_year = StringField()
    full_name = StringField()
    email = StringField()
    phone = StringField()
    postal_code = StringField()
    country = StringField(default="US")
    contact_method = StringField()
    agree = TickBox()
    signature = StringField()
    form_token = StringField()
    source = StringField()
    consent_version = StringField()
    consent_language = StringField()
    website = StringField()  # the honeypot: hidden from people, filled by bots

    def value(self, name: str) -> str:
        """What the person typed in ``name``, safe to write back into the page."""
        data = getattr(self, name).data
        return rules.printable(data) if isinstance(data, str) else ""

    def birthday_anchor(self) -> str:
        """The date part an error-summary link should land on: the first one left empty."""
        for part in ("birth_day", "birth_month", "birth_year"):
            if not (getattr(self, part).data or "").strip():
                return part
        return "birth_day"

    def honeypot_filled(self) -> bool:
        return bool((self.website.data or "").strip())

    def ensure_token(self) -> str:
        """The idempotency token: kept across re-renders, made fresh if absent or malformed."""
        token = self.form_token.data or ""
        if not TOKEN_PATTERN.fullmatch(token):
            token = new_form_token()
            self.form_token.data = token
        return token

    def clean(self, today: date) -> tuple[CleanSubmission | None, dict[str, object]]:
        """Apply every rule; return the clean submission, or the errors in page order."""
        errors: dict[str, object] = {}
        cleaned: dict[str, Any] = {}
        country = (self.country.data or "").strip().upper()
        checks: list[tuple[str, Callable[[], Any]]] = [
            ("filler", self._filler),
            ("representative_authority", self._representative_authority),
            ("cancer_type", self._cancer_type),
            ("cancer_other", self._cancer_other),
            ("birthday", lambda: self._birthday(today)),
            ("full_name", self._full_name),
            ("country", lambda: self._country(country)),
            ("email", self._email),
            ("phone", lambda: self._phone(country)),
            ("postal_code", lambda: self._postal_code(country)),
            ("contact_method", self._contact_method),
            ("agree", self._agree),
            ("signature", self._signature),
        ]
        for name, check in checks:
            try:
                cleaned[name] = check()
            except Invalid as problem:
                errors[name] = problem.message
        self._cross_checks(cleaned, errors, today)
        ordered = {name: errors[name] for name in FIELD_ORDER if name in errors}
        if ordered:
            return None, ordered
        return self._submission(cleaned), {}

    # -- one rule per field

    def _filler(self) -> str:
        filler = (self.filler.data or "").strip()
        if filler not in FILLERS:
            raise Invalid(_l("Choose who is filling in this form"))
        return filler

    def _representative_authority(self) -> str:
        text = rules.clean_text(self.representative_authority.data or "", max_length=200)
        if (self.filler.data or "").strip() == "representative" and not text:
            raise Invalid(
                _l("Describe your legal authority, for example healthcare power of attorney")
            )
        return text if (self.filler.data or "").strip() == "representative" else ""

    def _cancer_type(self) -> str:
        code = (self.cancer_type.data or "").strip()
        if code not in vocabulary():
            raise Invalid(
                _l(
                    "Choose a type of cancer. "
                    "If you are not sure, choose the last option in the list."
                )
            )
        return code

    def _cancer_other(self) -> str:
        text = rules.clean_text(
            self.cancer_other.data or "", max_length=rules.MAX_SHORT_TEXT, multiline=True
        )
        return text if (self.cancer_type.data or "").strip() == OTHER_CODE else ""

    def _birthday(self, today: date) -> date:
        return rules.birthday_from_parts(
            self.birth_day.data or "",
            self.birth_month.data or "",
            self.birth_year.data or "",
            today=today,
        )

    def _full_name(self) -> str:
        return rules.clean_name(
            self.full_name.data or "", empty_message=_l("Enter the patient’s full name")
        )

    def _country(self, country: str) -> str:
        if not rules.is_country(country):
            raise Invalid(_l("Choose a country"))
        return country

    def _email(self) -> str | None:
        raw = self.email.data or ""
        return rules.clean_email(raw) if raw.strip() else None

    def _phone(self, country: str) -> str | None:
        raw = self.phone.data or ""
        if not raw.strip():
            return None
        return rules.clean_phone(raw, country if rules.is_country(country) else "US")

    def _postal_code(self, country: str) -> str:
        return rules.clean_postal_code(self.postal_code.data or "", country)

    def _contact_method(self) -> str:
        method = (self.contact_method.data or "").strip()
        if method not in CONTACT_METHODS:
            raise Invalid(_l("Choose how you would like us to contact you"))
        return method

    def _agree(self) -> bool:
        if self.agree.data is not True:
            raise Invalid(_l("Check the box to say you agree to release your medical records"))
        return True

    def _signature(self) -> str:
        return rules.clean_name(
            self.signature.data or "", empty_message=_l("Type your full name to sign")
        )

    # -- rules that span fields

    def _cross_checks(
        self, cleaned: dict[str, Any], errors: dict[str, object], today: date
    ) -> None:
        birthday = cleaned.get("birthday")
        filler = cleaned.get("filler")
        if birthday and filler == "self" and age_in_years(birthday, today) < rules.ADULT_AGE_YEARS:
            errors["filler"] = _l(
                "The patient is under 18, so a parent, guardian or legal representative "
                "must fill in this form. Choose who is filling it in."
            )
        email, phone = cleaned.get("email"), cleaned.get("phone")
        no_email_problem = "email" not in errors and "phone" not in errors
        if no_email_problem and not email and not phone:
            errors["email"] = _l("Enter an email address or a phone number, or both")
        method = cleaned.get("contact_method")
        if method == "email" and "email" not in errors and not email:
            errors["email"] = _l("Enter an email address, or choose another way to contact you")
        if method in {"phone", "text"} and "phone" not in errors and not phone:
            errors["phone"] = _l("Enter a phone number, or choose another way to contact you")

    def _submission(self, cleaned: dict[str, Any]) -> CleanSubmission:
        sealed = {
            "full_name": cleaned["full_name"],
            "birthday": cleaned["birthday"].isoformat(),
            "email": cleaned["email"],
            "phone": cleaned["phone"],
            "postal_code": cleaned["postal_code"],
            "country": cleaned["country"],
            "contact_method": cleaned["contact_method"],
            "cancer_other": cleaned["cancer_other"] or None,
            "representative_authority": cleaned["representative_authority"] or None,
            "signature": cleaned["signature"],
        }
        return CleanSubmission(
            signer_role=SIGNER_ROLES[cleaned["filler"]],
            cancer_type=cleaned["cancer_type"],
            birthday=cleaned["birthday"],
            email=cleaned["email"],
            sealed_fields=sealed,
        )


def clean_source(value: str | None) -> str | None:
    """A slug (``?source=``) or a page's host and path with the query dropped; else nothing.

    Attribution must never identify anyone, so queries and fragments are always removed.
    """
    value = re.split(r"[?#]", (value or "").strip(), maxsplit=1)[0]
    if not value or len(value) > MAX_SOURCE or not value.isprintable():
        return None
    if SOURCE_SLUG.fullmatch(value):
        return value
    try:
        parts = urlsplit(value if "//" in value else "//" + value)
        host = (parts.hostname or "").lower()
    except ValueError:  # e.g. an unclosed "[" of an IPv6 literal
        return None
    if not host or not re.fullmatch(r"[a-z0-9.-]+", host):
        return None
    path = re.sub(r"[^A-Za-z0-9/._~-]", "", parts.path)[:200]
    return f"{host}{path}"
