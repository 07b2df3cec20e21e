"""English and Spanish: the catalog is current, complete, and served."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "intake" / "translations"


def _ids(path: Path) -> set[str]:
    with path.open("rb") as handle:
        return {str(message.id) for message in read_po(handle) if message.id}


def test_template_lists_every_string_in_the_code(tmp_path: Path) -> None:
    fresh = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_l",
            "-o",
            str(fresh),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    missing = _ids(fresh) - _ids(TRANSLATIONS / "messages.pot")
    assert not missing, f"run `make translations`: {sorted(missing)}"


def test_spanish_catalog_is_complete_and_reviewed() -> None:
    with (TRANSLATIONS / "es" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle)
    untranslated = [m.id for m in catalog if m.id and not m.string]
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert not untranslated and not fuzzy
    assert _ids(TRANSLATIONS / "messages.pot") <= {str(m.id) for m in catalog if m.id}


@pytest.mark.parametrize(
    ("language", "expected", "absent"),
    [
        ("es", "Infórmese sobre los ensayos clínicos", "Find out about"),
        ("en", "Find out about cancer clinical trials", "Infórmese"),
    ],
)
def test_page_is_served_in_the_chosen_language(
    client: FlaskClient, language: str, expected: str, absent: str
) -> None:
    body = client.get("/", headers={"Accept-Language": f"{language};q=1"}).get_data(as_text=True)
    assert f'<html lang="{language}">' in body
    assert expected in body and absent not in body


def test_error_pages_are_translated(client: FlaskClient) -> None:
    body = client.get("/missing", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert "No se encontró la página" in body
