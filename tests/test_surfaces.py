"""Two surfaces: a patient-only deployment with public keys cannot open anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flask import Flask

from intake.extensions import db
from intake.keys import current_keyring
from intake.sealing import AUDIT_ANCHOR_KEY_FILE, OpeningNotAllowed
from intake.submissions import open_submission
from tests.conftest import AppFactory
from tests.factories import make_submission

COORDINATOR_PATHS = ["/coordinator/", "/coordinator/submissions", "/coordinator/anything/else"]


@pytest.fixture
def public_keys(keys_dir: Path, tmp_path: Path) -> Path:
    """What `keys export-public` gives a public server: no private key file at all."""
    public = tmp_path / "public-keys"
    public.mkdir()
    for path in keys_dir.iterdir():
        if not path.name.endswith(".private.pem") and path.name != AUDIT_ANCHOR_KEY_FILE:
            shutil.copy(path, public / path.name)
    return public


@pytest.fixture
def patient_app(make_app: AppFactory, public_keys: Path) -> Flask:
    return make_app(SURFACES="patient", KEYS_DIR=str(public_keys))


@pytest.mark.parametrize("path", COORDINATOR_PATHS)
def test_patient_surface_has_no_coordinator_routes(patient_app: Flask, path: str) -> None:
    assert patient_app.test_client().get(path).status_code == 404
    assert not any(
        rule.rule.startswith("/coordinator") for rule in patient_app.url_map.iter_rules()
    )


def test_patient_surface_serves_the_public_pages_and_is_ready(patient_app: Flask) -> None:
    client = patient_app.test_client()
    assert client.get("/").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_patient_surface_seals_but_cannot_open(patient_app: Flask, app: Flask) -> None:
    with patient_app.app_context():
        keyring = current_keyring()
        assert not keyring.can_open
        submission = make_submission(db.session, keyring, "PUBLICSIDE")
        db.session.commit()
        with pytest.raises(OpeningNotAllowed):
            open_submission(db.session, keyring, submission, actor="attacker")
        db.session.rollback()
        submission_id = submission.id
    with app.app_context():  # the staff side, with the private key, opens it
        from intake.models import Submission

        row = db.session.get(Submission, submission_id)
        assert row is not None
        assert (
            open_submission(db.session, current_keyring(), row, actor="user:1")["full_name"]
            == "NAME-PUBLICSIDE"
        )


def test_patient_surface_never_loads_private_keys_even_if_present(
    make_app: AppFactory, keys_dir: Path
) -> None:
    app = make_app(SURFACES="patient", KEYS_DIR=str(keys_dir))
    with app.app_context():
        assert not current_keyring().can_open
        assert all(pair.private is None for pair in current_keyring()._pairs.values())


@pytest.mark.parametrize("path", COORDINATOR_PATHS)
def test_combined_surface_sends_anonymous_staff_requests_to_sign_in(app: Flask, path: str) -> None:
    response = app.test_client().get(path)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/coordinator/login?next=")


def test_coordinator_surface_has_no_patient_routes(make_app: AppFactory) -> None:
    app = make_app(SURFACES="coordinator")
    client = app.test_client()
    assert client.get("/").status_code == 404
    assert client.get("/coordinator/").status_code == 303  # to sign-in
    assert client.get("/coordinator/login").status_code == 200
    with app.app_context():
        assert current_keyring().can_open
