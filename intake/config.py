"""Settings: defaults, then the instance folder's ``config.toml``, then ``INTAKE_*`` variables.

Every setting is declared once in :data:`SETTINGS` with its type, default and meaning, so the
README table, the parser and the production checks cannot drift apart.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "INTAKE_"
INSTANCE_CONFIG_FILE = "config.toml"
DEV_SECRET_PREFIX = "dev-"  # noqa: S105  # nosec B105  # a marker production refuses
MIN_SECRET_LENGTH = 32
MIN_PASSPHRASE_LENGTH = 24
SURFACES = ("all", "patient", "coordinator")


class ConfigError(RuntimeError):
    """The configuration is unsafe or invalid; the message names the setting to fix."""


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _parse_log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return level


def _parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {raw!r}")
    return value


# scheme://host[:port]: a CSP host-source with no wildcard, user info, path or query.
ORIGIN = re.compile(r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")


def _parse_origins(raw: str) -> tuple[str, ...]:
    """``https://news.example.org https://blog.example.org`` -> a tuple of bare origins."""
    origins = []
    for item in raw.replace(",", " ").split():
        bare = item.removesuffix("/")
        if not ORIGIN.fullmatch(bare):
            raise ValueError(f"expected origins like https://news.example.org, got {item!r}")
        port = bare.rpartition(":")[2]
        if port.isdigit() and not 0 < int(port) < 65536:
            raise ValueError(f"expected a port from 1 to 65535 in {item!r}")
        origins.append(bare.lower())
    return tuple(origins)


# A host name (or a leading dot for every subdomain of one), or an IPv4 address: no port,
# scheme, path or wildcard. Werkzeug compares the request's host without its port.
HOST_NAME = re.compile(r"\.?[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


def _parse_hosts(raw: str) -> tuple[str, ...]:
    """``intake.example.org staff.example.org`` -> a tuple of lower-case host names."""
    hosts = []
    for item in raw.replace(",", " ").split():
        host = item.lower().removesuffix(".")
        if not HOST_NAME.fullmatch(host) or len(host) > 253:
            raise ValueError(f"expected host names like intake.example.org, got {item!r}")
        hosts.append(host)
    return tuple(hosts)


def _parse_rate_limit(raw: str) -> str:
    from limits import parse_many

    try:
        parse_many(raw)
    except ValueError as error:
        raise ValueError(f"expected e.g. '10 per minute; 60 per hour', got {raw!r}") from error
    return raw


@dataclass(frozen=True)
class Setting:
    """One configuration value: its Flask config key, parser, default and documentation."""

    key: str
    default: Any
    parse: Callable[[str], Any]
    help: str

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.key


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "ENV",
        "development",
        str,
        "`development` or `production`; production refuses unsafe settings.",
    ),
    Setting("SECRET_KEY", None, str, "Signs sessions and CSRF tokens. Same value on every worker."),
    Setting(
        "DATABASE_URL", None, str, "SQLAlchemy URL. Default: SQLite file in the instance folder."
    ),
    Setting(
        "SURFACES", "all", str, "`all`, `patient` (public form only) or `coordinator` (staff only)."
    ),
    Setting("KEYS_DIR", None, str, "Keyring folder. Default: `keys/` in the instance folder."),
    Setting(
        "AUDIT_ANCHOR_FILE",
        None,
        str,
        "Append-only file of signed audit-chain anchors (`audit anchor`). "
        "Default: `audit-anchors.jsonl` in the instance folder.",
    ),
    Setting("KEY_PASSPHRASE", None, str, "Passphrase of the private key files (PKCS#8), if set."),
    Setting(
        "SEALING_SUITE", "mlkem768-x25519", str, "Suite of new keys: `mlkem768-x25519` or `x25519`."
    ),
    Setting(
        "SESSION_COOKIE_SECURE",
        False,
        _parse_bool,
        "Send cookies over HTTPS only. Required in production.",
    ),
    Setting(
        "MAX_CONTENT_LENGTH", 64 * 1024, int, "Largest request body in bytes; larger ones get 413."
    ),
    Setting(
        "RATELIMIT_STORAGE_URI",
        "memory://",
        str,
        "Rate-limit storage; use shared storage with several workers.",
    ),
    Setting("ORGANIZATION_NAME", "Intake Research Site", str, "Who receives the released records."),
    Setting("LOG_LEVEL", "INFO", _parse_log_level, "Python logging level."),
    Setting(
        "SESSION_IDLE_MINUTES",
        15,
        _parse_positive_int,
        "Staff sessions end after this many minutes without a request (automatic logoff).",
    ),
    Setting(
        "SESSION_MAX_HOURS",
        12,
        _parse_positive_int,
        "Staff sessions end this many hours after sign-in, however active.",
    ),
    Setting(
        "TRUSTED_PROXIES",
        0,
        int,
        "How many reverse proxies in front set X-Forwarded-For/-Proto/-Host (0: trust none).",
    ),
    Setting(
        "TRUSTED_HOSTS",
        (),
        _parse_hosts,
        "Host names this deployment answers to, separated by spaces; any other `Host` gets 400. "
        "Required in production.",
    ),
    Setting(
        "EMBED_ORIGINS",
        (),
        _parse_origins,
        "Sites allowed to show `/embed` in an iframe: origins separated by spaces.",
    ),
    Setting(
        "SUBMIT_RATE_LIMIT",
        "10 per minute; 60 per hour",
        _parse_rate_limit,
        "Form sends allowed per IP address (Flask-Limiter syntax).",
    ),
    Setting(
        "WITHDRAW_RATE_LIMIT",
        "5 per minute; 20 per hour",
        _parse_rate_limit,
        "Withdrawal attempts allowed per IP address.",
    ),
    Setting(
        "CONTACT_WITHIN_DAYS",
        5,
        int,
        "Working days within which the confirmation page promises a first contact.",
    ),
)
_BY_KEY = {setting.key: setting for setting in SETTINGS}


def defaults() -> dict[str, Any]:
    return {setting.key: setting.default for setting in SETTINGS}


def read_instance_file(instance_path: Path) -> dict[str, Any]:
    """Settings saved in the instance folder (by ``flask dev init`` or by hand)."""
    path = instance_path / INSTANCE_CONFIG_FILE
    if not path.exists():
        return {}
    with path.open("rb") as handle:
        loaded = tomllib.load(handle)
    unknown = sorted(set(loaded) - set(_BY_KEY))
    if unknown:
        raise ConfigError(f"{path}: unknown settings {', '.join(unknown)}")
    return {key: _typed(_BY_KEY[key], value, f"{path}: {key}") for key, value in loaded.items()}


def _typed(setting: Setting, value: Any, where: str) -> Any:
    """Run every value through its setting's parser, whether it came as text or as TOML."""
    if value is None:
        return None
    if isinstance(value, list):  # TOML arrays, e.g. EMBED_ORIGINS = ["https://a", "https://b"]
        value = " ".join(str(item) for item in value)
    if isinstance(value, str) or setting.parse is not str:
        try:
            return setting.parse(str(value).lower() if isinstance(value, bool) else str(value))
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from error
    return value


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env_var)
        if raw is None or raw == "":
            continue
        values[setting.key] = _typed(setting, raw, setting.env_var)
    return values


def load_settings(
    instance_path: Path,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge defaults < instance file < environment < explicit overrides (tests)."""
    merged = defaults()
    merged.update(read_instance_file(instance_path))
    merged.update(read_environment(os.environ if environ is None else environ))
    merged.update(overrides or {})
    merged["ENV"] = str(merged["ENV"]).strip().lower()
    if merged["ENV"] not in {"development", "production"}:
        raise ConfigError("INTAKE_ENV: must be `development` or `production`")
    if merged["SURFACES"] not in SURFACES:
        raise ConfigError(f"INTAKE_SURFACES: must be one of {', '.join(SURFACES)}")
    if not merged.get("DATABASE_URL"):
        merged["DATABASE_URL"] = f"sqlite:///{instance_path / 'intake.sqlite3'}"
    if not merged.get("KEYS_DIR"):
        merged["KEYS_DIR"] = str(instance_path / "keys")
    if not merged.get("AUDIT_ANCHOR_FILE"):
        merged["AUDIT_ANCHOR_FILE"] = str(instance_path / "audit-anchors.jsonl")
    return merged


def is_production(settings: Mapping[str, Any]) -> bool:
    return bool(settings["ENV"] == "production")


def production_problems(settings: Mapping[str, Any]) -> list[str]:
    """Everything that makes these settings unsafe for production, each naming its setting.

    Key-related checks live with the keyring (see ``sealing.Keyring.production_problems``).
    """
    problems: list[str] = []
    secret = settings.get("SECRET_KEY") or ""
    if not secret:
        problems.append("INTAKE_SECRET_KEY is not set")
    elif secret.startswith(DEV_SECRET_PREFIX):
        problems.append("INTAKE_SECRET_KEY is a development secret made by `flask dev init`")
    elif len(secret) < MIN_SECRET_LENGTH:
        problems.append(f"INTAKE_SECRET_KEY is shorter than {MIN_SECRET_LENGTH} characters")
    if str(settings["DATABASE_URL"]).startswith("sqlite"):
        problems.append("INTAKE_DATABASE_URL points at SQLite; production needs PostgreSQL")
    if not settings.get("TRUSTED_HOSTS"):
        problems.append(
            "INTAKE_TRUSTED_HOSTS is not set; name the host names this deployment answers to "
            "(redirects and links are built from the Host header)"
        )
    if settings.get("SESSION_COOKIE_SECURE") is not True:
        problems.append("INTAKE_SESSION_COOKIE_SECURE must be true (cookies over HTTPS only)")
    passphrase = settings.get("KEY_PASSPHRASE")
    if passphrase and len(passphrase) < MIN_PASSPHRASE_LENGTH:
        # PKCS#8 files use PBKDF2 with few rounds: the passphrase itself must carry the strength.
        problems.append(
            f"INTAKE_KEY_PASSPHRASE is shorter than {MIN_PASSPHRASE_LENGTH} characters; "
            "use a generated one"
        )
    return problems
