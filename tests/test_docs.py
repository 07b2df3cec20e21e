"""The docs match the code: every setting and command in the README exists, and the security
model shows the sealing strings and the audit anchor message exactly as the code builds them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from intake import sealing
from intake.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SECURITY = (ROOT / "docs" / "security.md").read_text()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env_var)
def test_readme_documents_every_setting(setting: object) -> None:
    assert f"`{setting.env_var}`" in README  # type: ignore[attr-defined]


def test_quick_start_names_the_two_commands() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start


def test_every_documented_flask_command_exists(app: Flask) -> None:
    documented = set(re.findall(r"flask --app intake ([a-z0-9-]+(?: [a-z0-9-]+)?)", README))
    assert documented, "the README shows no commands"
    for command in documented:
        group, _, sub = command.partition(" ")
        assert group in app.cli.commands, command
        if sub and not sub.startswith("-"):  # "purge-expired --dry-run": an option, no group
            assert sub in app.cli.commands[group].commands, command  # type: ignore[attr-defined]


def test_security_model_shows_the_sealing_strings_the_code_builds() -> None:
    aad = sealing._payload_aad("<binding>").decode()
    info = sealing._hpke_info("<binding>", "<key id>").decode()
    assert f"associated data `{aad}`" in SECURITY
    assert f"`info = {info}`" in SECURITY


def test_security_model_shows_the_anchor_mac_message_the_code_builds() -> None:
    message = sealing._anchor_message(0, "<hash>", "<anchored_at>").decode()
    assert f"`{message.replace('|0|', '|<event id>|')}`" in SECURITY


def test_security_model_no_longer_calls_built_features_planned() -> None:
    assert "purge-expired" in SECURITY
    assert "Not built yet:** the expiry job" not in SECURITY
