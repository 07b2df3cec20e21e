"""Audit anchors: signed heads kept outside the database catch what the chain alone cannot.

An attacker who can write the audit table can rebuild the whole chain with consistent hashes,
or cut its tail and move the head back; the plain chain check then passes. An anchor signed
with the staff-side key, kept in a file outside the database, still names the row and hash
that were there.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import Connection, text

from intake import audit
from intake.extensions import db
from intake.models import AuditEvent
from intake.sealing import AUDIT_ANCHOR_KEY_FILE
from tests.test_audit import _as_schema_owner, _write_events

EVENT_COLUMNS = "id, occurred_at, actor, action, target, details, prev_hash, hash"


def _anchor_file(app: Flask) -> Path:
    return Path(app.config["AUDIT_ANCHOR_FILE"])


def _anchor(runner: FlaskCliRunner, *args: str) -> str:
    result = runner.invoke(args=["audit", "anchor", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _verify(runner: FlaskCliRunner) -> tuple[int, str]:
    result = runner.invoke(args=["audit", "verify"])
    return result.exit_code, result.output


def _chain_alone(app: Flask) -> audit.ChainReport:
    with app.app_context():
        return audit.verify_chain(db.session())


def _rebuild_chain(connection: Connection) -> None:
    """Replace every row with new content and recompute every hash and the head, consistently."""
    table = AuditEvent.__table__
    rows = connection.execute(table.select().order_by(table.c.id)).all()
    connection.execute(text("DELETE FROM audit_events"))
    prev = audit.GENESIS_HASH
    for row in rows:
        details = json.dumps({"n": row.id * 100}, separators=(",", ":"))
        content = audit.canonical_content(
            row.id, row.occurred_at, row.actor, row.action, row.target, details
        )
        new_hash = audit.chain_hash(prev, content)
        connection.execute(
            table.insert().values(
                id=row.id,
                occurred_at=row.occurred_at,
                actor=row.actor,
                action=row.action,
                target=row.target,
                details=details,
                prev_hash=prev,
                hash=new_hash,
            )
        )
        prev = new_hash
    connection.execute(
        text("UPDATE audit_head SET last_event_id = :i, last_hash = :h WHERE id = 1"),
        {"i": rows[-1].id, "h": prev},
    )


def _cut_tail_to_row_4(connection: Connection) -> None:
    """Delete rows 5 and 6 and move the head back to row 4: the chain is consistent again."""
    connection.execute(text("DELETE FROM audit_events WHERE id > 4"))
    last = connection.execute(text("SELECT hash FROM audit_events WHERE id = 4")).scalar_one()
    connection.execute(
        text("UPDATE audit_head SET last_event_id = 4, last_hash = :h WHERE id = 1"), {"h": last}
    )


def test_anchor_appends_a_signed_line_and_verify_checks_it(
    app: Flask, runner: FlaskCliRunner
) -> None:
    _write_events(app, 3)
    out = _anchor(runner)
    assert out.startswith("anchored row 3, head ")
    _write_events(app, 2)
    line = json.loads(_anchor(runner, "--json"))
    assert line["event_id"] == 5 and line["v"] == 1 and len(line["mac"]) == 64
    path = _anchor_file(app)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [json.loads(text)["event_id"] for text in path.read_text().splitlines()] == [3, 5]
    code, output = _verify(runner)
    assert code == 0, output
    assert "anchors: 2 of 2 hold; newest: row 5 at " in output


def test_rebuilt_chain_passes_alone_but_fails_its_anchor(
    app: Flask, runner: FlaskCliRunner
) -> None:
    _write_events(app, 6)
    _anchor(runner)  # row 6
    _as_schema_owner(app, _rebuild_chain)
    assert _chain_alone(app).ok  # the attacker's chain is consistent in itself
    code, output = _verify(runner)
    assert code == 1
    assert "BROKEN at row 6: anchor at line 1 of the anchor file (row 6" in output
    assert "holds another hash: the chain was rebuilt" in output
    with app.app_context():
        anchors = audit.read_anchors(_anchor_file(app))
        report = audit.verify_chain(db.session(), anchors=anchors)
    assert not report.ok and report.failed_anchor == 1
    result = runner.invoke(args=["audit", "anchor"])  # and the next cron run refuses to bless it
    assert result.exit_code == 1
    assert "not anchored" in result.output
    assert len(_anchor_file(app).read_text().splitlines()) == 1


def test_tail_cut_below_an_anchor_is_found(app: Flask, runner: FlaskCliRunner) -> None:
    _write_events(app, 3)
    _anchor(runner)  # row 3: still there after the cut
    _write_events(app, 3)
    _anchor(runner)  # row 6: cut away below
    _as_schema_owner(app, _cut_tail_to_row_4)
    assert _chain_alone(app).ok
    code, output = _verify(runner)
    assert code == 1
    assert "BROKEN at row 6: anchor at line 2" in output
    assert "is missing: the chain ends at row 4 (rows cut from the end)" in output


def test_forged_anchor_line_is_named(app: Flask, runner: FlaskCliRunner) -> None:
    _write_events(app, 4)
    _anchor(runner)
    _as_schema_owner(app, _rebuild_chain)
    path = _anchor_file(app)
    with app.app_context():
        head = db.session.scalars(text("SELECT hash FROM audit_events WHERE id = 4")).one()
    # The attacker writes the rebuilt head into the anchor file, but cannot sign it.
    forged = json.loads(path.read_text())
    forged["hash"] = head
    with path.open("a") as handle:
        handle.write(json.dumps(forged) + "\n")
    code, output = _verify(runner)
    assert code == 1
    assert f"FORGED anchor at line 2 of {path} (row 4)" in output
    result = runner.invoke(args=["audit", "anchor"])
    assert result.exit_code == 1
    assert "the newest anchor (line 2) does not verify" in result.output


def test_damaged_anchor_file_is_an_error_naming_the_line(
    app: Flask, runner: FlaskCliRunner
) -> None:
    _write_events(app, 2)
    _anchor(runner)
    with _anchor_file(app).open("a") as handle:
        handle.write('{"v": 1, "event_id": "two"}\n')
    code, output = _verify(runner)
    assert code == 1
    assert "line 2 is not an anchor record" in output


def test_missing_anchor_key_is_a_clear_error(
    app: Flask, runner: FlaskCliRunner, keys_dir: Path
) -> None:
    _write_events(app, 2)
    _anchor(runner)
    (keys_dir / AUDIT_ANCHOR_KEY_FILE).unlink()
    for command in ("anchor", "verify"):
        result = runner.invoke(args=["audit", command])
        assert result.exit_code == 1, command
        assert "no audit anchor key" in result.output
        assert "flask --app intake audit anchor-key" in result.output
    result = runner.invoke(args=["audit", "anchor-key"])
    assert result.exit_code == 0 and "audit anchor key: created" in result.output
    assert stat.S_IMODE((keys_dir / AUDIT_ANCHOR_KEY_FILE).stat().st_mode) == 0o600
    # A new key cannot vouch for anchors made under the old one: they show up as forged.
    code, output = _verify(runner)
    assert code == 1 and "FORGED anchor at line 1" in output


def test_empty_trail_is_not_anchored(app: Flask, runner: FlaskCliRunner) -> None:
    assert _anchor(runner).startswith("nothing to anchor")
    assert not _anchor_file(app).exists()
