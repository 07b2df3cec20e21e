"""The withdrawal form: a reference and a withdrawal code, both as printed on the confirmation."""

from __future__ import annotations

import re

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import StringField

from intake.patient.validation import printable
from intake.submissions import normalize_code

CODE_SHAPES = {"reference": 8, "code": 12}


class WithdrawForm(FlaskForm):
    class Meta:
        csrf = False  # the app-wide CSRFProtect checks every POST

    reference = StringField()
    code = StringField()

    def value(self, name: str) -> str:
        data = getattr(self, name).data
        return printable(data)[:64] if isinstance(data, str) else ""

    def clean(self) -> tuple[str, str, dict[str, object]]:
        """Both codes in their canonical shape, or errors about their shape only.

        Whether they match a submission is decided later and answered generically.
        """
        errors: dict[str, object] = {}
        cleaned = {}
        for name, length in CODE_SHAPES.items():
            typed = getattr(self, name).data or ""
            code = normalize_code(typed[:64])
            if not typed.strip():
                errors[name] = _EMPTY[name]
            elif not re.fullmatch(r"[A-Z0-9-]+", code) or len(code.replace("-", "")) != length:
                errors[name] = _SHAPE[name]
            cleaned[name] = code
        return cleaned["reference"], cleaned["code"], errors


_EMPTY = {
    "reference": _l("Enter your reference code"),
    "code": _l("Enter your withdrawal code"),
}
_SHAPE = {
    "reference": _l("Your reference code has 8 letters and numbers, like ABCD-2345"),
    "code": _l("Your withdrawal code has 12 letters and numbers, like ABCD-2345-EFGH"),
}
