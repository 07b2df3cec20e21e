"""Command line: ``flask --app intake keys|audit|users|dev|purge-expired ...``."""

from __future__ import annotations

import getpass
import secrets
import sys
from pathlib import Path

import click
import flask_migrate
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from intake import accounts, audit, retention, triage
from intake import keys as key_service
from intake.config import DEV_SECRET_PREFIX, INSTANCE_CONFIG_FILE, is_production
from intake.database import checkpoint, read_only
from intake.extensions import db
from intake.models import ROLES, User
from intake.sealing import (
    AUDIT_ANCHOR_KEY_FILE,
    SUITES,
    SealingError,
    ensure_audit_anchor_key,
    ensure_blind_index_key,
    export_public_keys,
    generate_key,
    load_audit_anchor_key,
    retire_key_files,
)

keys_cli = AppGroup("keys", help="Manage the sealing keyring.")
audit_cli = AppGroup("audit", help="Check and anchor the audit trail.")
dev_cli = AppGroup("dev", help="Development helpers (refused in production).")
users_cli = AppGroup("users", help="Manage staff accounts.")

DEMO_EMAIL = "demo@example.org"


def session() -> Session:
    """The request-scoped session itself (services are typed on ``Session``)."""
    return db.session()


def cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


def _schema_ready() -> bool:
    return inspect(db.engine).has_table("audit_events")


def _audit_key_generated(key_id: str, suite: str, dev: bool) -> None:
    if _schema_ready():
        audit.record(
            session(),
            actor=cli_actor(),
            action="keys.generated",
            target=key_id,
            details={"suite": suite, "dev": dev},
        )
        db.session.commit()


# ---------------------------------------------------------------------------- keys


@keys_cli.command("generate")
@click.option(
    "--suite", type=click.Choice(SUITES), default=None, help="Default: INTAKE_SEALING_SUITE."
)
def keys_generate(suite: str | None) -> None:
    """Create a key pair; it seals every new record from now on."""
    chosen = suite or current_app.config["SEALING_SUITE"]
    info = generate_key(key_service.keys_dir(), suite=chosen, passphrase=key_service.passphrase())
    _audit_key_generated(info.key_id, info.suite, dev=False)
    click.echo(f"generated {info.key_id} ({info.suite}) in {key_service.keys_dir()}")
    if not key_service.passphrase():
        click.echo("note: the private key is not passphrase-protected (set INTAKE_KEY_PASSPHRASE)")


@keys_cli.command("list")
def keys_list() -> None:
    """Show every key, its state and how many rows it still protects."""
    keyring = key_service.current_keyring()
    usage = key_service.key_usage(session()) if _schema_ready() else {}
    infos = keyring.list_keys()
    if not infos:
        click.echo("no keys; run `flask --app intake keys generate`")
        return
    sealing = keyring.sealing_key_id if any(info.active for info in infos) else None
    click.echo(f"{'KEY ID':<24} {'SUITE':<16} {'CREATED (UTC)':<20} {'STATE':<12} ROWS")
    for info in infos:
        state = "sealing" if info.key_id == sealing else ("active" if info.active else "retired")
        if info.active and not info.has_private:
            state += "/public"
        created = info.created_at.strftime("%Y-%m-%d %H:%M:%S")
        dev = " (dev)" if info.dev else ""
        rows = usage.get(info.key_id, 0)
        click.echo(f"{info.key_id:<24} {info.suite:<16} {created:<20} {state:<12} {rows}{dev}")


@keys_cli.command("rotate")
@click.option(
    "--new-key", is_flag=True, help="Generate a fresh key first, then move every row to it."
)
@click.option(
    "--batch-size",
    default=key_service.DEFAULT_BATCH_SIZE,
    show_default=True,
    type=click.IntRange(1, 100_000),
)
def keys_rotate(new_key: bool, batch_size: int) -> None:
    """Rewrap every row onto the newest key, one committed batch at a time.

    Interrupted? Run it again (without --new-key): it carries on where it stopped.
    """
    if new_key:
        info = generate_key(
            key_service.keys_dir(),
            suite=current_app.config["SEALING_SUITE"],
            passphrase=key_service.passphrase(),
        )
        _audit_key_generated(info.key_id, info.suite, dev=False)
        click.echo(f"generated {info.key_id}")
    keyring = key_service.reload_keyring()
    pending = key_service.pending_rotation(session(), keyring)
    click.echo(f"{pending} rows to move onto {keyring.sealing_key_id}")
    with click.progressbar(length=pending, label="rotating", file=sys.stderr) as bar:
        result = key_service.rotate(
            session(),
            keyring,
            actor=cli_actor(),
            batch_size=batch_size,
            commit=session().commit,
            on_batch=bar.update,
        )
    click.echo(f"done: {result.rewrapped} rows moved to {keyring.sealing_key_id}")
    remaining = key_service.pending_rotation(session(), keyring) - len(result.failed)
    if remaining > 0:
        click.echo(
            f"{remaining} rows were sealed to an older key meanwhile; run `keys rotate` again"
        )
    if result.failed:
        for row in result.failed:
            click.echo(f"could not open {row.binding}: left on its key (audited)", err=True)
        raise click.ClickException(
            f"{len(result.failed)} rows did not open; the old key stays until they are dealt with"
        )


@keys_cli.command("retire")
@click.argument("key_id")
def keys_retire(key_id: str) -> None:
    """Destroy an old key's private half once no row needs it."""
    keyring = key_service.current_keyring()
    try:
        key_service.retire(session(), keyring, key_id, actor=cli_actor())
    except (key_service.KeyInUse, SealingError) as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error
    db.session.commit()
    retire_key_files(key_service.keys_dir(), key_id)
    key_service.reload_keyring()
    click.echo(f"retired {key_id}: its private key is destroyed")


@keys_cli.command("export-public")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
def keys_export_public(destination: Path) -> None:
    """Copy what a patient-surface server needs (public keys, blind-index key) to DESTINATION."""
    copied = export_public_keys(key_service.keys_dir(), destination)
    click.echo(f"copied {len(copied)} files to {destination} (no private key)")


# ---------------------------------------------------------------------------- audit


def _anchor_file() -> Path:
    return Path(current_app.config["AUDIT_ANCHOR_FILE"])


def _anchor_key() -> bytes:
    """The staff-side anchor key, or a clear error (exit 1) naming what is missing."""
    try:
        return load_audit_anchor_key(key_service.keys_dir())
    except SealingError as error:
        raise click.ClickException(str(error)) from error


def _read_anchors(path: Path) -> list[audit.Anchor]:
    try:
        return audit.read_anchors(path)
    except audit.AnchorError as error:
        raise click.ClickException(str(error)) from error


@audit_cli.command("verify")
def audit_verify() -> None:
    """Walk the hash chain and check every anchor; exit 1 naming what does not hold.

    Without an anchor file only the chain itself is checked, and a line says so.
    """
    path = _anchor_file()
    anchors = _read_anchors(path)
    forged = audit.bad_macs(anchors, _anchor_key()) if anchors else []
    report = audit.verify_chain(session(), anchors=[a for a in anchors if a not in forged])
    click.echo(str(report))
    for anchor in forged:
        click.echo(
            f"FORGED anchor at line {anchor.line} of {path} (row {anchor.event_id}): its MAC "
            "does not verify under the anchor key (edited or added by someone without it)"
        )
    if not anchors:
        click.echo(f"anchors: none in {path}; the chain was checked against itself only")
    elif report.ok:
        newest = anchors[-1]
        click.echo(
            f"anchors: {len(anchors) - len(forged)} of {len(anchors)} hold; newest: row "
            f"{newest.event_id} at {newest.anchored_at}"
        )
    broken_disclosures = triage.verify_disclosures(session())
    if broken_disclosures:
        click.echo(
            f"disclosures: BROKEN for audit rows {broken_disclosures}: the submissions listed "
            "for these export batches no longer match what their audit rows recorded"
        )
    else:
        click.echo("disclosures: every export batch lists the submissions its audit row recorded")
    if not report.ok or forged or broken_disclosures:
        sys.exit(1)


@audit_cli.command("anchor")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the anchor as one JSON line (to ship to a log host or WORM store).",
)
def audit_anchor(as_json: bool) -> None:
    """Sign the chain's head and append it to INTAKE_AUDIT_ANCHOR_FILE (cron, every 10 min).

    The rows since the previous anchor are checked first; a broken chain is not anchored
    (exit 1).
    """
    path = _anchor_file()
    try:
        anchor, report = audit.anchor_head(session(), _anchor_key(), path)
    except audit.AnchorError as error:
        raise click.ClickException(str(error)) from error
    if not report.ok:
        click.echo(str(report))
        raise click.ClickException("the chain is broken: not anchored")
    if anchor is None:
        click.echo("nothing to anchor: the audit trail is empty", err=as_json)
        return
    if as_json:
        click.echo(anchor.to_json())
    else:
        click.echo(f"anchored row {anchor.event_id}, head {anchor.hash}, in {path}")


@audit_cli.command("anchor-key")
def audit_anchor_key() -> None:
    """Create the audit anchor key in the keys folder if it is missing (staff host only)."""
    folder = key_service.keys_dir()
    created = ensure_audit_anchor_key(folder)
    state = "created" if created else "kept"
    click.echo(f"audit anchor key: {state} ({folder / AUDIT_ANCHOR_KEY_FILE})")


# ---------------------------------------------------------------------------- retention


@click.command("purge-expired")
@click.option("--dry-run", is_flag=True, help="Only count what would be shredded; change nothing.")
@click.option(
    "--batch-size",
    default=retention.DEFAULT_BATCH_SIZE,
    show_default=True,
    type=click.IntRange(1, 10_000),
)
@with_appcontext
def purge_expired(dry_run: bool, batch_size: int) -> None:
    """Crypto-shred submissions whose authorization has expired (daily, from cron).

    Exit 0 when done (also when there was nothing to do), 1 when it stopped: what it
    committed stays shredded, and the next run carries on.
    """
    if dry_run:
        read_only(session())
        expired = retention.count_expired(session())
        click.echo(f"{expired} submissions have an expired authorization (dry run: none shredded)")
        return
    try:
        result = retention.purge_expired(
            session(), actor=cli_actor(), commit=session().commit, batch_size=batch_size
        )
    except SQLAlchemyError as error:
        db.session.rollback()
        raise click.ClickException(
            f"purge stopped ({type(error).__name__}); batches already committed stay shredded, "
            "run it again to carry on"
        ) from error
    click.echo(
        f"shredded {result.shredded} of {result.expired} submissions with an expired "
        f"authorization, in {result.batches} batch{'' if result.batches == 1 else 'es'}"
    )
    if not checkpoint(session()):
        click.echo("note: WAL checkpoint deferred; the next checkpoint finishes it", err=True)


# ---------------------------------------------------------------------------- users


FIRST_SIGN_IN = (
    "At the first sign-in its owner sets up two-step verification (the key is made then and\n"
    "shown only to them) and replaces this first password with their own."
)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _user(email: str) -> User:
    try:
        return accounts.get_user(session(), email)
    except accounts.AccountError as error:
        raise click.ClickException(str(error)) from error


@users_cli.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the account may do.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
def users_create(email: str, role: str, password_stdin: bool) -> None:
    """Create a staff account (password: at least 12 characters)."""
    password = _read_password(password_stdin)
    try:
        user = accounts.create_user(session(), email, role, password, actor=cli_actor())
    except accounts.AccountError as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error
    db.session.commit()
    click.echo(f"created {user.ref} {user.email} ({user.role})")
    click.echo(FIRST_SIGN_IN)


@users_cli.command("list")
def users_list() -> None:
    """Show every staff account and its state."""
    users = accounts.list_users(session())
    if not users:
        click.echo("no accounts; run `flask --app intake users create EMAIL --role admin`")
        return
    click.echo(f"{'ID':<5} {'EMAIL':<40} {'ROLE':<12} {'STATE':<9} {'TWO-STEP':<9} CREATED (UTC)")
    for user in users:
        state = "active" if user.active else "disabled"
        two_step = "enrolled" if user.totp_enrolled_at else "pending"
        created = user.created_at.strftime("%Y-%m-%d %H:%M")
        click.echo(
            f"{user.id:<5} {user.email:<40} {user.role:<12} {state:<9} {two_step:<9} {created}"
        )


@users_cli.command("disable")
@click.argument("email")
def users_disable(email: str) -> None:
    """Disable an account; its sessions end at their next request."""
    user = _user(email)
    changed = accounts.disable_user(session(), user, actor=cli_actor())
    db.session.commit()
    click.echo(f"disabled {user.ref} {user.email}" if changed else f"{user.email} was disabled")


@users_cli.command("reset-2fa")
@click.argument("email")
def users_reset_2fa(email: str) -> None:
    """Give an account a new TOTP secret (lost phone); it is set up again at next sign-in."""
    user = _user(email)
    accounts.reset_2fa(session(), user, actor=cli_actor())
    db.session.commit()
    click.echo(f"reset two-step verification of {user.ref} {user.email}; its sessions ended")
    click.echo("Its owner sets it up again at the next sign-in; the new key is shown only to them.")


# ---------------------------------------------------------------------------- dev


@dev_cli.command("init")
def dev_init() -> None:
    """Set up a development instance once: secret, database schema, keyring. Safe to re-run."""
    if is_production(current_app.config):
        raise click.ClickException("`dev init` makes development secrets; refused in production")
    instance = Path(current_app.instance_path)
    click.echo("secret key: " + ("created" if _ensure_dev_secret(instance) else "kept"))
    flask_migrate.upgrade()
    click.echo(f"database: migrated ({db.engine.url.render_as_string(hide_password=True)})")
    keys_dir = key_service.keys_dir()
    keyring = key_service.current_keyring()
    if any(info.active for info in keyring.list_keys()):
        click.echo(f"keyring: kept ({keys_dir})")
    else:
        info = generate_key(
            keys_dir,
            suite=current_app.config["SEALING_SUITE"],
            dev=True,
            passphrase=key_service.passphrase(),
        )
        _audit_key_generated(info.key_id, info.suite, dev=True)
        click.echo(f"keyring: created development key {info.key_id} in {keys_dir}")
    ensure_blind_index_key(keys_dir)
    ensure_audit_anchor_key(keys_dir)
    key_service.reload_keyring()
    _ensure_demo_user()


@dev_cli.command("seed")
@click.argument("count", type=click.IntRange(1, 10_000_000))
@click.option("--batch", default=5000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--seed", "seed_value", default=42, show_default=True, help="Shapes the data.")
@click.option(
    "--days",
    default=700,
    show_default=True,
    type=click.IntRange(1, 3650),
    help="Spread received dates over this many past days.",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(0, 64),
    help="Sealing processes (default: one per core for large runs; 0: in this process).",
)
def dev_seed(count: int, batch: int, seed_value: int, days: int, workers: int | None) -> None:
    """Insert COUNT realistic sealed submissions in bulk, for benchmarks (one audit row)."""
    if is_production(current_app.config):
        raise click.ClickException("`dev seed` makes fake submissions; refused in production")
    import time

    from intake import seeding

    keyring = key_service.current_keyring()
    try:
        folder: Path | None = key_service.keys_dir()
    except SealingError:
        folder = None
    started, done = time.monotonic(), 0

    def progress(rows: int) -> None:
        nonlocal done
        done += rows
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed else 0.0
        click.echo(f"  {done:>10,} / {count:,} rows  {elapsed:7.1f} s  {rate:9,.0f} rows/s")

    result = seeding.seed(
        session(),
        keyring,
        count,
        batch=batch,
        seed_value=seed_value,
        days=days,
        keys_dir=folder,
        passphrase=key_service.passphrase(),
        workers=workers,
        actor=cli_actor(),
        on_batch=progress,
    )
    elapsed = time.monotonic() - started
    click.echo(
        f"seeded {result.inserted:,} submissions ({result.withdrawn:,} withdrawn) "
        f"in {elapsed:.1f} s, {result.inserted / elapsed:,.0f} rows/s"
    )


def _ensure_demo_user() -> None:
    """A demo coordinator (admin role, so every staff page is reachable), made once."""
    if accounts.find_user(session(), DEMO_EMAIL) is not None:
        click.echo(f"demo coordinator: kept ({DEMO_EMAIL}; its password was shown when made)")
        return
    password = secrets.token_urlsafe(12)
    user = accounts.create_user(session(), DEMO_EMAIL, "admin", password, actor=cli_actor())
    db.session.commit()
    click.echo(f"demo coordinator: created {user.email} (admin), shown once:")
    click.echo(f"  password: {password}")
    click.echo("  Sign in at /coordinator/: scan the QR code with an authenticator app, then")
    click.echo("  choose your own password.")


def _ensure_dev_secret(instance: Path) -> bool:
    path = instance / INSTANCE_CONFIG_FILE
    existing = path.read_text() if path.exists() else ""
    if any(line.strip().startswith("SECRET_KEY") for line in existing.splitlines()):
        return False
    line = f'SECRET_KEY = "{DEV_SECRET_PREFIX}{secrets.token_urlsafe(32)}"\n'
    if path.exists():
        with path.open("a") as handle:
            handle.write(("\n" if existing and not existing.endswith("\n") else "") + line)
    else:
        path.touch(mode=0o600)
        path.write_text("# Written by `flask --app intake dev init`. Development only.\n" + line)
    path.chmod(0o600)
    return True


def register_commands(app: Flask) -> None:
    for group in (keys_cli, audit_cli, users_cli, dev_cli):
        app.cli.add_command(group)
    app.cli.add_command(purge_expired)
