"""The README documents every setting and the commands it tells people to run exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from intake.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


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
