"""The staff surface: triage of sealed submissions. Only deployments with private keys serve it.

Every route hangs off :data:`bp`. ``auth`` adds sign-in, the staff session cookie and the
access guard; a view without an ``auth.login_required(...)`` or ``auth.public`` declaration is
refused with 403, so a forgotten decorator fails closed.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("coordinator", __name__, url_prefix="/coordinator")
