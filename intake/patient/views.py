"""Public pages: the intake form (also embeddable), its confirmation, and withdrawal.

Views stay thin: the form's rules live in ``forms``/``validation``, storage in
``intake.submissions``; each POST commits once. Whatever goes wrong after a person pressed
"Send", the page they get back still holds everything they typed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    abort,
    after_this_request,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import format_date, format_datetime, get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError, generate_csrf
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, TooManyRequests
from werkzeug.wrappers import Response as BaseResponse

from intake import consent
from intake.database import checkpoint, retry_transient
from intake.extensions import db, limiter
from intake.keys import current_keyring
from intake.models import utcnow
from intake.patient.counters import count
from intake.patient.forms import CleanSubmission, IntakeForm, clean_source, new_form_token
from intake.patient.options import cancer_options, country_options
from intake.patient.page_cache import cached_page
from intake.patient.validation import printable
from intake.patient.withdrawal import WithdrawForm
from intake.sealing import SealingError
from intake.submissions import (
    Receipt,
    TriageFacts,
    WithdrawalRefused,
    age_band,
    pretend_receipt,
    receive_submission,
    withdraw_submission,
)
from intake.vocabulary import OTHER_CODE, vocabulary
from intake.web import allow_framing, render_error

log = logging.getLogger("intake.patient")
bp = Blueprint("patient", __name__)

RECEIPTS_KEPT = 3  # confirmations this browser session can show again
FORM_ENDPOINTS = {"patient.form", "patient.embed"}
EMBED_ENDPOINTS = {"patient.embed", "patient.embed_confirmation"}

NOTES = {
    "csrf": _l(
        "For your security, this page timed out. Your answers are still here: "
        "check them and send the form again."
    ),
    "rate": _l(
        "You have tried several times in a short while. Please wait a minute, then send again."
    ),
    "unavailable": _l(
        "We could not save your answers just now. Nothing is lost: your answers are still here. "
        "Please try sending again in a few minutes."
    ),
}


def _submit_limit() -> str:
    return str(current_app.config["SUBMIT_RATE_LIMIT"])


def _withdraw_limit() -> str:
    return str(current_app.config["WITHDRAW_RATE_LIMIT"])


def _switching_language() -> bool:
    """Switching language re-renders what was typed and stores nothing: it is not a send."""
    return "switch_language" in request.form


submit_limit = limiter.shared_limit(
    _submit_limit, scope="submit", methods=["POST"], exempt_when=_switching_language
)


def _counts_against_the_client(response: BaseResponse) -> bool:
    """A 503 is our failure, not the client's try: it must not use up their limit (a patient
    who met an outage could otherwise be locked out of withdrawing for the hour)."""
    return response.status_code != 503


withdraw_limit = limiter.limit(
    _withdraw_limit,
    methods=["POST"],
    exempt_when=_switching_language,
    deduct_when=_counts_against_the_client,
)


# ---------------------------------------------------------------------------- the form


@bp.url_defaults
def keep_language(endpoint: str, values: dict[str, Any]) -> None:
    """Links between public pages keep the language the person chose."""
    if "lang" not in values and request and request.args.get("lang"):
        values["lang"] = str(get_locale())


@bp.route("/", methods=["GET", "POST"])
@submit_limit
def form() -> Any:
    return _form_page(embedded=False)


@bp.route("/embed", methods=["GET", "POST"])
@submit_limit
def embed() -> Any:
    _allow_embedding()
    return _form_page(embedded=True)


def _allow_embedding() -> None:
    g.embedded = True  # the session cookie must work inside another site's iframe too
    origins = current_app.config["EMBED_ORIGINS"]
    allow_framing(" ".join(origins) if origins else "'none'")


def _form_page(*, embedded: bool) -> Any:
    if request.method == "GET":
        return _first_visit(embedded=embedded)
    form = IntakeForm()
    form.ensure_token()
    if "switch_language" in request.form:  # the [EN]/[ES] buttons post the form back, kept
        return _render_form(form, embedded=embedded)
    if form.honeypot_filled():
        return _pretend_accepted(form, embedded=embedded)
    clean, errors = form.clean(today=datetime.now(UTC).date())
    if clean is None:
        return _render_form(form, embedded=embedded, errors=errors, status=422)
    return _store(form, clean, embedded=embedded)


def _store(form: IntakeForm, clean: CleanSubmission, *, embedded: bool) -> Any:
    """Seal and store a valid form once, then send the person to their confirmation."""
    text = _text_seen(form)
    signed_at = utcnow()
    facts = TriageFacts(
        cancer_type=clean.cancer_type,
        age_band=age_band(clean.birthday, signed_at.date()),
        consent_version=text.version,
        consent_language=text.language,
        authorization_expires_at=text.expires_at(signed_at),
        source=clean_source(form.source.data),
        consent_text_sha256=text.sha256(),
        signer_role=clean.signer_role,
        signed_at=signed_at,
    )
    try:
        receipt = receive_submission(
            db.session(),
            current_keyring(),
            facts,
            clean.sealed_fields,
            submit_token=form.ensure_token(),
            email=clean.email,
            birthday=clean.birthday,
        )
        db.session.commit()
    except (SQLAlchemyError, SealingError) as error:
        db.session.rollback()
        log.error("could not store a submission: %s", type(error).__name__)
        return _render_form(form, embedded=embedded, note="unavailable", status=503)
    if receipt.withdrawn:  # an old page sent again after its submission was withdrawn
        return redirect(url_for("patient.withdrawn"), code=303)
    _remember(receipt, text, signed_at)
    return _to_confirmation(receipt.reference, embedded=embedded)


def _text_seen(form: IntakeForm) -> consent.ConsentText:
    """The authorization the person read: the version and language the page showed them."""
    version = (form.consent_version.data or "").strip()
    language = (form.consent_language.data or "").strip()
    try:
        return consent.signed_text(version, language)
    except (KeyError, consent.ConsentError):
        return consent.active_text(str(get_locale()))


def _first_visit(*, embedded: bool) -> tuple[str, int]:
    """The blank form with fresh tokens, from the page cache (see ``page_cache``)."""
    language = str(get_locale())
    key = (
        request.endpoint,
        language,
        request.script_root,
        consent.active_text(language).version,
        current_app.config["ORGANIZATION_NAME"],
    )
    values = {
        "csrf_token": generate_csrf(),
        "form_token": new_form_token(),
        "source": printable(_source_of_visit() or ""),
    }

    def render(holes: Mapping[str, str]) -> str:
        form = IntakeForm()
        form.form_token.data = holes["form_token"]
        form.source.data = holes["source"]
        return _render_form(form, embedded=embedded, csrf_token=lambda: holes["csrf_token"])[0]

    return cached_page(key, values, render), 200


def _render_form(
    form: IntakeForm,
    *,
    embedded: bool,
    errors: dict[str, object] | None = None,
    note: str | None = None,
    status: int = 200,
    **context: Any,
) -> tuple[str, int]:
    language = str(get_locale())
    text = consent.active_text(language)
    if request.method == "POST" and "switch_language" not in request.form:
        text = _text_seen(form) if form.consent_language.data == language else text
    form.consent_version.data = text.version
    form.consent_language.data = text.language
    page = render_template(
        "patient/form.html",
        form=form,
        errors=errors or {},
        note=NOTES.get(note or ""),
        consent_text=text,
        cancer_options=cancer_options(language, form.value("cancer_type")),
        other_code=OTHER_CODE,
        other_label=vocabulary().label(OTHER_CODE, language),
        country_options=country_options(language, form.value("country")),
        embedded=embedded,
        language=language,
        action=url_for("patient.embed" if embedded else "patient.form", lang=language),
        **context,
    )
    return page, status


def _source_of_visit() -> str | None:
    """``?source=`` or the page the visitor came from (never our own pages)."""
    source = clean_source(request.args.get("source"))
    if source:
        return source
    referrer = request.referrer or ""
    if referrer and request.host not in referrer.split("/")[2:3]:
        return clean_source(referrer.split("://", 1)[-1])
    return None


def _pretend_accepted(form: IntakeForm, *, embedded: bool) -> BaseResponse:
    """A bot filled the hidden field: it sees what a person would, and nothing is stored."""
    try:
        count(db.session(), "honeypot")
        db.session.commit()
    except SQLAlchemyError as error:  # counting is best effort; the bot must still be fooled
        db.session.rollback()
        log.error("could not count a honeypot submission: %s", type(error).__name__)
    log.info("honeypot submission discarded")
    text = _text_seen(form)
    receipt = pretend_receipt(current_keyring(), form.ensure_token())
    _remember(receipt, text, utcnow())
    return _to_confirmation(receipt.reference, embedded=embedded)


def _remember(receipt: Receipt, text: consent.ConsentText, signed_at: datetime) -> None:
    """Keep what the confirmation shows in this browser's session: codes, never PHI."""
    receipts: dict[str, Any] = dict(session.get("receipts", {}))
    if receipt.reference in receipts:
        return  # a replay: keep the first confirmation, withdrawal code included
    receipts[receipt.reference] = {
        "code": receipt.withdrawal_code,
        "version": text.version,
        "language": text.language,
        "signed_at": signed_at.isoformat(timespec="seconds"),
        # Part of the signed text: the copy shown later must not change if the site is renamed.
        "organization": current_app.config["ORGANIZATION_NAME"],
    }
    session["receipts"] = dict(list(receipts.items())[-RECEIPTS_KEPT:])


def _to_confirmation(reference: str, *, embedded: bool) -> BaseResponse:
    endpoint = "patient.embed_confirmation" if embedded else "patient.confirmation"
    return redirect(url_for(endpoint, reference=reference, lang=str(get_locale())), code=303)


# ---------------------------------------------------------------------------- confirmation


@bp.get("/confirmation/<reference>")
def confirmation(reference: str) -> str:
    return _confirmation_page(reference, embedded=False)


@bp.get("/embed/confirmation/<reference>")
def embed_confirmation(reference: str) -> str:
    _allow_embedding()
    return _confirmation_page(reference, embedded=True)


def _confirmation_page(reference: str, *, embedded: bool) -> str:
    """Only the browser session that sent the form can see this; a shared link shows nothing.

    The reference is one this session was given (never just any URL segment), so it is safe
    as a value of the page cache; the page is cached per signed text and language.
    """
    receipt = session.get("receipts", {}).get(reference)
    if not isinstance(receipt, dict):
        abort(404)
    try:
        text = consent.signed_text(
            receipt["version"], receipt["language"], receipt.get("organization")
        )
        signed_at = datetime.fromisoformat(receipt["signed_at"])
    except (KeyError, ValueError, TypeError, consent.ConsentError):
        abort(404)
    code = receipt.get("code")
    values = {
        "reference": reference,
        "signed_on": format_datetime(signed_at, "medium"),
        "ends_on": format_date(text.expires_at(signed_at), "long"),
        **({"withdrawal_code": str(code)} if code else {}),
    }
    key = (
        request.endpoint,
        str(get_locale()),
        request.script_root,
        text.version,
        text.language,
        receipt.get("organization"),
        bool(code),
        current_app.config["ORGANIZATION_NAME"],
        current_app.config["CONTACT_WITHIN_DAYS"],
    )

    def render(holes: Mapping[str, str]) -> str:
        return render_template(
            "patient/confirmation.html",
            reference=holes["reference"],
            withdrawal_code=holes.get("withdrawal_code"),
            consent_text=text,
            signed_on=holes["signed_on"],
            ends_on=holes["ends_on"],
            embedded=embedded,
            contact_within_days=current_app.config["CONTACT_WITHIN_DAYS"],
            language_link_args={"reference": holes["reference"]},
        )

    return cached_page(key, values, render)


# ---------------------------------------------------------------------------- withdrawal


@bp.route("/withdraw", methods=["GET", "POST"])
@withdraw_limit
def withdraw() -> Any:
    form = WithdrawForm()
    if request.method == "GET" or "switch_language" in request.form:
        return render_template("patient/withdraw.html", form=form, errors={})
    reference, code, errors = form.clean()
    if errors:
        return render_template("patient/withdraw.html", form=form, errors=errors), 422
    try:
        withdrawn = retry_transient(db.session(), lambda: _withdraw_and_commit(reference, code))
    except (SQLAlchemyError, SealingError) as error:
        db.session.rollback()
        log.error("could not withdraw a submission: %s", type(error).__name__)
        return render_template(
            "patient/withdraw.html", form=form, errors={}, note=NOTES["unavailable"]
        ), 503
    if not withdrawn:
        return render_template("patient/withdraw.html", form=form, refused=True, errors={}), 422
    _checkpoint_after_response()
    return redirect(url_for("patient.withdrawn", lang=str(get_locale())), code=303)


def _withdraw_and_commit(reference: str, code: str) -> bool:
    """One attempt: shred and commit (True), or commit the refusal's audit row (False).

    A deadlock or serialization failure (a coordinator's write meeting the shred) is retried
    whole by :func:`retry_transient`: the patient gets the answer, never a 503 for it.
    """
    try:
        withdraw_submission(db.session(), current_keyring(), reference, code)
    except WithdrawalRefused:
        db.session.commit()  # the refusal's audit row
        return False
    db.session.commit()
    return True


def _checkpoint_after_response() -> None:
    """Overwrite the shredded pages in SQLite's write-ahead log too, once the person has left."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def _checkpoint() -> None:
        with app.app_context():
            checkpoint(db.session())
            db.session.remove()

    @after_this_request
    def _schedule(response: BaseResponse) -> BaseResponse:
        response.call_on_close(_checkpoint)
        return response


@bp.get("/withdraw/done")
def withdrawn() -> str:
    return render_template("patient/withdrawn.html")


# ---------------------------------------------------------------- refusals that keep input


@bp.errorhandler(CSRFError)
def csrf_expired(error: CSRFError) -> Any:
    return _keep_input(error, note="csrf", status=422)


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error: RequestEntityTooLarge) -> Any:
    """The body was never read, so nothing can be kept; but inside an iframe, stay visible."""
    if request.endpoint in EMBED_ENDPOINTS:
        _allow_embedding()
    return render_error(error)


@bp.errorhandler(TooManyRequests)
def too_many(error: TooManyRequests) -> Any:
    return _keep_input(error, note="rate", status=429)


def _keep_input(error: HTTPException, *, note: str, status: int) -> Any:
    """Re-render the form the person sent, with a note, instead of a bare error page."""
    if request.method == "POST" and request.endpoint in FORM_ENDPOINTS:
        embedded = request.endpoint == "patient.embed"
        if embedded:
            _allow_embedding()
        form = IntakeForm()
        form.ensure_token()
        return _render_form(form, embedded=embedded, note=note, status=status)
    if request.method == "POST" and request.endpoint == "patient.withdraw":
        page = render_template(
            "patient/withdraw.html", form=WithdrawForm(), errors={}, note=NOTES[note]
        )
        return page, status
    return render_error(error)
