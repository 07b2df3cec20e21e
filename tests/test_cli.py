"""`flask dev init`: sets up a development instance once and loses nothing when run again."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import Result
from sqlalchemy import select

from intake import create_app
from intake.extensions import db
from intake.models import AuditEvent


def _dev_init(instance: Path) -> tuple[Result, str]:
    app = create_app({"INSTANCE_PATH": str(instance)})
    result = app.test_cli_runner().invoke(args=["dev", "init"])
    with app.app_context():
        actions = list(db.session.scalars(select(AuditEvent.action)))
        db.session.remove()
        db.engine.dispose()
    return result, ",".join(actions)


def test_dev_init_creates_everything_once(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    first, actions = _dev_init(instance)
    assert first.exit_code == 0, first.output
    assert "secret key: created" in first.output and "development key" in first.output
    assert actions == "keys.generated"
    config = (instance / "config.toml").read_text()
    assert 'SECRET_KEY = "dev-' in config
    keys = sorted(p.name for p in (instance / "keys").iterdir())
    for path in [
        instance / "config.toml",
        instance / "intake.sqlite3",
        *(instance / "keys").iterdir(),
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    second, actions = _dev_init(instance)
    assert second.exit_code == 0, second.output
    assert "secret key: kept" in second.output and "keyring: kept" in second.output
    assert (instance / "config.toml").read_text() == config
    assert sorted(p.name for p in (instance / "keys").iterdir()) == keys
    assert actions == "keys.generated"


def test_dev_init_keeps_other_settings_in_the_instance_file(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.toml").write_text('ORGANIZATION_NAME = "Mercy Oncology"')
    result, _ = _dev_init(instance)
    assert result.exit_code == 0, result.output
    text = (instance / "config.toml").read_text()
    assert 'ORGANIZATION_NAME = "Mercy Oncology"' in text and "SECRET_KEY" in text
    assert (
        create_app({"INSTANCE_PATH": str(instance)}).config["ORGANIZATION_NAME"] == "Mercy Oncology"
    )


def test_dev_init_is_refused_in_production(tmp_path: Path) -> None:
    from intake.sealing import generate_key

    keys = tmp_path / "keys"
    generate_key(keys)
    app = create_app(
        {
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "ENV": "production",
            "SECRET_KEY": "p" * 40,
            "DATABASE_URL": "postgresql+psycopg://x@127.0.0.1:9/x",
            "SESSION_COOKIE_SECURE": True,
            "KEYS_DIR": str(keys),
        }
    )
    result = app.test_cli_runner().invoke(args=["dev", "init"])
    assert result.exit_code != 0
    assert "refused in production" in result.output
    assert not (tmp_path / "instance" / "config.toml").exists()
