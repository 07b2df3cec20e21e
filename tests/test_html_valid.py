"""Every public page is valid HTML by the Nu HTML checker, in English and in Spanish.

The pages are rendered through the test client to files, then checked in one JVM start (each
start costs seconds). The checker is vnu-jar from package.json (`npm ci`), run with the system
Java; outside CI a missing one skips, in CI it fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import require
from tests.patient_helpers import hidden_fields, send, valid_answers

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VNU = PROJECT_ROOT / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
LANGUAGES = ("en", "es")
CODES = re.compile(r'id="(reference|withdrawal-code)">([A-Z0-9-]+)<')


def _page(response: object, status: int) -> str:
    assert getattr(response, "status_code", None) == status, getattr(response, "status", None)
    return response.get_data(as_text=True)  # type: ignore[attr-defined]


def _codes(html: str) -> dict[str, str]:
    return dict(CODES.findall(html))


def _withdraw(client: FlaskClient, lang: str, **answers: str) -> object:
    path = f"/withdraw?lang={lang}"
    csrf = hidden_fields(client.get(path).get_data(as_text=True))
    return client.post(path, data={**csrf, **answers})


def render_pages(client: FlaskClient, lang: str) -> dict[str, str]:
    """Every public page a patient can meet, as the server sends it, in ``lang``."""
    pages: dict[str, str] = {}
    form, embed = f"/?lang={lang}", f"/embed?lang={lang}"
    pages["form"] = _page(client.get(form), 200)
    pages["form-errors"] = _page(send(client, valid_answers(email="nope", birth_day=""), form), 422)
    pages["form-all-errors"] = _page(send(client, {}, form), 422)
    pages["form-representative-errors"] = _page(
        send(client, valid_answers(filler="representative", cancer_type="other_not_sure"), form),
        422,
    )
    pages["form-timed-out"] = _page(client.post(form, data=valid_answers()), 422)  # no CSRF
    sent = send(client, valid_answers(), form)
    assert sent.status_code == 303
    pages["confirmation"] = _page(client.get(sent.headers["Location"]), 200)
    pages["embed"] = _page(client.get(embed), 200)
    pages["embed-errors"] = _page(send(client, valid_answers(agree=""), embed), 422)
    sent_embedded = send(client, valid_answers("EMBED"), embed)
    assert sent_embedded.status_code == 303
    pages["embed-confirmation"] = _page(client.get(sent_embedded.headers["Location"]), 200)
    pages["withdraw"] = _page(client.get(f"/withdraw?lang={lang}"), 200)
    pages["withdraw-errors"] = _page(_withdraw(client, lang, reference="", code="x"), 422)
    pages["withdraw-refused"] = _page(
        _withdraw(client, lang, reference="ABCD-2345", code="ABCD-2345-EFGH"), 422
    )
    codes = _codes(pages["confirmation"])
    done = _withdraw(client, lang, reference=codes["reference"], code=codes["withdrawal-code"])
    assert done.status_code == 303
    pages["withdrawn"] = _page(client.get(done.headers["Location"]), 200)
    pages["not-found"] = _page(client.get(f"/no-such-page?lang={lang}"), 404)
    return pages


@pytest.fixture(scope="module")
def vnu() -> list[str]:
    java = shutil.which("java")
    require(java is not None, "Java", "install it with `apt-get install default-jre-headless`")
    require(VNU.exists(), "The Nu HTML checker", "run `make node_modules` (npm ci) to get it")
    assert java is not None
    return [java, "-jar", str(VNU)]


def test_every_public_page_is_valid_html(vnu: list[str], sqlite_app: Flask, tmp_path: Path) -> None:
    files: list[Path] = []
    for lang in LANGUAGES:
        client = sqlite_app.test_client()  # a fresh session per language
        for name, html in render_pages(client, lang).items():
            path = tmp_path / f"{lang}-{name}.html"
            path.write_text(html, encoding="utf-8")
            files.append(path)

    result = subprocess.run(
        [*vnu, "--errors-only", "--format", "json", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    report = json.loads(result.stderr or result.stdout or '{"messages": []}')
    problems = [
        f"{Path(m.get('url', '?')).name}:{m.get('lastLine', '?')}: {m.get('type')}: "
        f"{m.get('message')}\n    {(m.get('extract') or '').strip()}"
        for m in report.get("messages", [])
    ]
    assert not problems, "The Nu HTML checker found errors:\n" + "\n".join(problems)
    assert result.returncode == 0, result.stderr
