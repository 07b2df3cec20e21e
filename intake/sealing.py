"""Sealed storage: the only module that touches keys and ciphers.

Envelope design (see docs/security.md):

* Each record gets a fresh 256-bit data key. The payload is encrypted with AES-256-GCM under it,
  with the record's binding as associated data.
* The data key is sealed with HPKE (RFC 9180) to the newest key pair of the keyring, with
  ``info = intake/v1|<binding>|<key id>``. A blob copied to another row, or a row relabelled with
  another key id, fails to open.
* Rotation rewraps only the data key, so payloads are never rewritten.

A keyring loaded without private keys (the public surface) can seal and compute blind indexes,
but every attempt to open raises :class:`OpeningNotAllowed`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT = "intake/v1"
PAYLOAD_VERSION = 1
PAD_BLOCK = 256  # payload lengths are rounded up to this, so ciphertexts leak only a size band
DATA_KEY_BYTES = 32
NONCE_BYTES = 12
BLIND_INDEX_FILE = "blind-index.key"
# The audit anchor key signs heads of the audit chain kept outside the database (intake/audit.py).
# Staff side only: `keys export-public` never copies it, and a patient host must not hold it.
AUDIT_ANCHOR_KEY_FILE = "audit-anchor.key"
AUDIT_ANCHOR_FORMAT = "intake/audit-anchor/v1"
SECRET_KEY_BYTES = 32
PUBLIC_SUFFIX = ".public.json"
PRIVATE_SUFFIX = ".private.pem"

SUITE_HYBRID = "mlkem768-x25519"
SUITE_CLASSIC = "x25519"
_SUITES = {
    SUITE_HYBRID: hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
    SUITE_CLASSIC: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
}
SUITES = tuple(_SUITES)


class SealingError(Exception):
    """Base of every error this module raises. Messages never contain plaintext."""


class KeyringError(SealingError):
    """The keyring folder is missing, unreadable, malformed, or its passphrase is wrong."""


class KeyNotFound(SealingError):
    """No key with that id, or no active key to seal with."""


class OpeningNotAllowed(SealingError):
    """This keyring holds public keys only: it can seal but never open."""


class SealedDataInvalid(SealingError):
    """The blob does not open: tampered, moved to another record, or sealed to another key."""


@dataclass(frozen=True)
class SealedBlob:
    """What a row stores: which key wrapped the data key, the wrapped key, and the ciphertext."""

    key_id: str
    wrapped_key: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class KeyInfo:
    """Public facts about one key pair, safe to print."""

    key_id: str
    suite: str
    created_at: datetime
    dev: bool
    retired_at: datetime | None
    has_private: bool

    @property
    def active(self) -> bool:
        return self.retired_at is None


@dataclass(frozen=True)
class _KeyPair:
    info: KeyInfo
    public: Any
    private: Any | None


# ---------------------------------------------------------------------------- key files


def _write_secret_file(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only; never overwrite an existing one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_secret_file(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    _write_secret_file(temporary, data)
    temporary.replace(path)


def _shred_file(path: Path) -> None:
    """Overwrite, then unlink. Best effort: journaling filesystems and SSDs may keep copies."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.write(secrets.token_bytes(size))
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()


def _encryption(passphrase: bytes | None) -> serialization.KeySerializationEncryption:
    if passphrase:
        return serialization.BestAvailableEncryption(passphrase)
    return serialization.NoEncryption()


def _private_pem(key: Any, passphrase: bytes | None) -> bytes:
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encryption(passphrase)
    )
    return data


def _new_key_id(now: datetime) -> str:
    return f"k{now:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


def generate_key(
    directory: Path,
    *,
    suite: str = SUITE_HYBRID,
    dev: bool = False,
    passphrase: bytes | None = None,
) -> KeyInfo:
    """Create a key pair in ``directory``; it becomes the newest, so it seals from now on."""
    if suite not in _SUITES:
        raise KeyringError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.now(UTC)
    key_id = _new_key_id(now)
    if suite == SUITE_HYBRID:
        pq_key = mlkem.MLKEM768PrivateKey.generate()
        ec_key = x25519.X25519PrivateKey.generate()
        public = {
            "mlkem768": _b64(pq_key.public_key().public_bytes_raw()),
            "x25519": _b64(ec_key.public_key().public_bytes_raw()),
        }
        private_pem = _private_pem(pq_key, passphrase) + _private_pem(ec_key, passphrase)
    else:
        ec_key = x25519.X25519PrivateKey.generate()
        public = {"x25519": _b64(ec_key.public_key().public_bytes_raw())}
        private_pem = _private_pem(ec_key, passphrase)
    record = {
        "format": FORMAT,
        "key_id": key_id,
        "suite": suite,
        "created_at": now.isoformat(),
        "dev": dev,
        "retired_at": None,
        "public_key": public,
    }
    _write_secret_file(directory / f"{key_id}{PRIVATE_SUFFIX}", private_pem)
    _write_secret_file(directory / f"{key_id}{PUBLIC_SUFFIX}", _json_bytes(record))
    ensure_blind_index_key(directory)
    ensure_audit_anchor_key(directory)
    return KeyInfo(key_id, suite, now, dev, None, has_private=True)


def _ensure_random_key(path: Path) -> bool:
    """Create a file holding 32 random bytes (base64) unless it exists. True when created."""
    if path.exists():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_secret_file(path, base64.b64encode(secrets.token_bytes(SECRET_KEY_BYTES)) + b"\n")
    return True


def ensure_blind_index_key(directory: Path) -> bool:
    """Create the blind-index key if it is missing. Returns True when it was created."""
    return _ensure_random_key(directory / BLIND_INDEX_FILE)


def ensure_audit_anchor_key(directory: Path) -> bool:
    """Create the audit anchor key if it is missing. Returns True when it was created."""
    return _ensure_random_key(directory / AUDIT_ANCHOR_KEY_FILE)


def retire_key_files(directory: Path, key_id: str) -> None:
    """Destroy a key's private half and mark it retired. Callers check no row still needs it."""
    public_path = directory / f"{key_id}{PUBLIC_SUFFIX}"
    if not public_path.exists():
        raise KeyNotFound(f"no key {key_id!r} in {directory}")
    record = json.loads(public_path.read_bytes())
    record["retired_at"] = datetime.now(UTC).isoformat()
    _replace_secret_file(public_path, _json_bytes(record))
    private_path = directory / f"{key_id}{PRIVATE_SUFFIX}"
    if private_path.exists():
        _shred_file(private_path)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _json_bytes(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def _load_public(record: dict[str, Any]) -> Any:
    public = record["public_key"]
    ec_public = x25519.X25519PublicKey.from_public_bytes(_unb64(public["x25519"]))
    if record["suite"] == SUITE_HYBRID:
        pq_public = mlkem.MLKEM768PublicKey.from_public_bytes(_unb64(public["mlkem768"]))
        return hpke.MLKEM768X25519PublicKey(pq_public, ec_public)
    return ec_public


def _load_private(path: Path, record: dict[str, Any], passphrase: bytes | None) -> Any:
    """Read a private key file and prove it belongs to its public record.

    A mismatched pair (say, after restoring the wrong backup) would seal records nobody can
    open, so it is refused here rather than discovered later.
    """
    try:
        pem_blocks = _pem_blocks(path.read_bytes())
        keys = [
            serialization.load_pem_private_key(block, password=passphrase) for block in pem_blocks
        ]
    except TypeError as error:  # encrypted without a passphrase, or a passphrase for a plain key
        raise KeyringError(f"{path.name}: {_passphrase_hint(passphrase)}") from error
    except (ValueError, OSError) as error:  # wrong passphrase, damaged or half-copied file
        raise KeyringError(
            f"{path.name}: cannot be read or decrypted (damaged, or wrong INTAKE_KEY_PASSPHRASE?)"
        ) from error
    ec_key = next((k for k in keys if isinstance(k, x25519.X25519PrivateKey)), None)
    pq_key = next((k for k in keys if isinstance(k, mlkem.MLKEM768PrivateKey)), None)
    expected = {"x25519": 1, "mlkem768": 1 if record["suite"] == SUITE_HYBRID else 0}
    found = {"x25519": sum(k is ec_key for k in keys), "mlkem768": sum(k is pq_key for k in keys)}
    if ec_key is None or found != expected or len(keys) != sum(expected.values()):
        raise KeyringError(f"{path.name}: does not hold the keys of suite {record['suite']}")
    halves: dict[str, Any] = {"x25519": ec_key}
    if pq_key is not None:
        halves["mlkem768"] = pq_key
    for name, key in halves.items():
        if _b64(key.public_key().public_bytes_raw()) != record["public_key"].get(name):
            raise KeyringError(f"{path.name}: does not match {record['key_id']}{PUBLIC_SUFFIX}")
    if pq_key is not None:
        return hpke.MLKEM768X25519PrivateKey(pq_key, ec_key)
    return ec_key


def _passphrase_hint(passphrase: bytes | None) -> str:
    if passphrase:
        return "is not passphrase-protected, but INTAKE_KEY_PASSPHRASE is set"
    return "is passphrase-protected; set INTAKE_KEY_PASSPHRASE"


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks: list[bytes] = []
    remaining = data
    while b"-----BEGIN " in remaining:
        start = remaining.index(b"-----BEGIN ")
        end_marker = remaining.find(b"-----END ", start)
        end = remaining.find(b"-----", end_marker + len(b"-----END ")) if end_marker >= 0 else -1
        if end < 0:
            raise ValueError("unterminated PEM block")
        end += len(b"-----")
        blocks.append(remaining[start:end] + b"\n")
        remaining = remaining[end:]
    if not blocks:
        raise ValueError("no PEM block")
    return blocks


# ---------------------------------------------------------------------------- the keyring


def _pad(plaintext: bytes) -> bytes:
    framed = struct.pack(">I", len(plaintext)) + plaintext
    return framed + b"\x00" * (-len(framed) % PAD_BLOCK)


def _unpad(padded: bytes) -> bytes:
    if len(padded) < 4:
        raise SealedDataInvalid("sealed payload is too short")
    (length,) = struct.unpack(">I", padded[:4])
    if length > len(padded) - 4:
        raise SealedDataInvalid("sealed payload has an impossible length")
    return padded[4 : 4 + length]


def _hpke_info(binding: str, key_id: str) -> bytes:
    return f"{FORMAT}|{binding}|{key_id}".encode()


def _payload_aad(binding: str) -> bytes:
    return f"{FORMAT}|payload|v{PAYLOAD_VERSION}|{binding}".encode()


class Keyring:
    """Key pairs by id, the newest active one sealing, plus the blind-index key."""

    def __init__(
        self, pairs: Iterable[_KeyPair], blind_index_key: bytes | None, *, can_open: bool
    ) -> None:
        self._pairs = {pair.info.key_id: pair for pair in pairs}
        self._blind_index_key = blind_index_key
        self.can_open = can_open

    @classmethod
    def load(
        cls, directory: Path, *, with_private: bool, passphrase: bytes | None = None
    ) -> Keyring:
        """Read every key in ``directory``. With ``with_private=False`` no private file is read."""
        pairs: list[_KeyPair] = []
        if directory.is_dir():
            for public_path in sorted(directory.glob(f"*{PUBLIC_SUFFIX}")):
                pairs.append(_read_pair(public_path, with_private, passphrase))
        return cls(pairs, _read_blind_index_key(directory), can_open=with_private)

    # -- facts

    def list_keys(self) -> list[KeyInfo]:
        return sorted((pair.info for pair in self._pairs.values()), key=lambda k: k.created_at)

    @property
    def sealing_key_id(self) -> str:
        active = [info for info in self.list_keys() if info.active]
        if not active:
            raise KeyNotFound(
                "the keyring has no active key; run `flask --app intake keys generate`"
            )
        return active[-1].key_id

    @property
    def ready(self) -> bool:
        """Can seal (and open, where this keyring is meant to) with the newest key."""
        try:
            newest = self._pairs[self.sealing_key_id]
        except KeyNotFound:
            return False
        has_private = newest.private is not None
        return self._blind_index_key is not None and (has_private or not self.can_open)

    def production_problems(self) -> list[str]:
        return [
            f"INTAKE_KEYS_DIR holds development key {info.key_id} (made by `flask dev init`)"
            for info in self.list_keys()
            if info.dev and info.active
        ]

    # -- sealing

    def seal(self, plaintext: bytes, *, binding: str) -> SealedBlob:
        key_id = self.sealing_key_id
        pair = self._pairs[key_id]
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = AESGCM(data_key).encrypt(nonce, _pad(plaintext), _payload_aad(binding))
        ciphertext = bytes([PAYLOAD_VERSION]) + nonce + body
        return SealedBlob(key_id, self._wrap(pair, data_key, binding), ciphertext)

    def open(self, blob: SealedBlob, *, binding: str) -> bytes:
        data_key = self._unwrap(blob, binding)
        if len(blob.ciphertext) < 1 + NONCE_BYTES or blob.ciphertext[0] != PAYLOAD_VERSION:
            raise SealedDataInvalid("sealed payload has an unknown format")
        nonce = blob.ciphertext[1 : 1 + NONCE_BYTES]
        try:
            padded = AESGCM(data_key).decrypt(
                nonce, blob.ciphertext[1 + NONCE_BYTES :], _payload_aad(binding)
            )
        except InvalidTag as error:
            raise SealedDataInvalid("sealed payload failed authentication") from error
        return _unpad(padded)

    def rewrap(self, blob: SealedBlob, *, binding: str) -> SealedBlob:
        """Move a record's data key to the newest key. The payload is untouched."""
        target = self.sealing_key_id
        if blob.key_id == target:
            return blob
        data_key = self._unwrap(blob, binding)
        return replace(
            blob, key_id=target, wrapped_key=self._wrap(self._pairs[target], data_key, binding)
        )

    def _wrap(self, pair: _KeyPair, data_key: bytes, binding: str) -> bytes:
        suite = _SUITES[pair.info.suite]
        wrapped: bytes = suite.encrypt(
            data_key, pair.public, info=_hpke_info(binding, pair.info.key_id)
        )
        return wrapped

    def _unwrap(self, blob: SealedBlob, binding: str) -> bytes:
        if not self.can_open:
            raise OpeningNotAllowed("this keyring holds public keys only; it cannot open records")
        pair = self._pairs.get(blob.key_id)
        if pair is None:
            raise KeyNotFound(f"no key {blob.key_id!r} in the keyring")
        if pair.private is None:
            raise KeyNotFound(f"key {blob.key_id!r} has no private half (retired?)")
        suite = _SUITES[pair.info.suite]
        try:
            data_key: bytes = suite.decrypt(
                blob.wrapped_key, pair.private, info=_hpke_info(binding, blob.key_id)
            )
        except (InvalidTag, ValueError) as error:
            raise SealedDataInvalid("sealed data key failed authentication") from error
        if len(data_key) != DATA_KEY_BYTES:
            raise SealedDataInvalid("sealed data key has the wrong length")
        return data_key

    # -- blind index

    def blind_index(self, kind: str, value: str) -> bytes:
        """HMAC-SHA256 of a normalized value, domain-separated by ``kind``."""
        if self._blind_index_key is None:
            raise KeyNotFound(f"no {BLIND_INDEX_FILE} in the keyring")
        message = kind.encode() + b"\x00" + value.encode("utf-8")
        return hmac.new(self._blind_index_key, message, hashlib.sha256).digest()

    def email_index(self, email: str) -> bytes:
        return self.blind_index("email", normalize_email(email))

    def email_birthday_index(self, email: str, birthday: date) -> bytes:
        return self.blind_index(
            "email+birthday", f"{normalize_email(email)}|{birthday.isoformat()}"
        )


def normalize_email(email: str) -> str:
    return unicodedata.normalize("NFC", email).strip().casefold()


def _read_blind_index_key(directory: Path) -> bytes | None:
    path = directory / BLIND_INDEX_FILE
    if not path.exists():
        return None
    return _read_random_key(path)


def _read_random_key(path: Path) -> bytes:
    try:
        key = _unb64(path.read_text().strip())
    except (OSError, ValueError) as error:
        raise KeyringError(f"{path.name}: unreadable ({type(error).__name__})") from error
    if len(key) != SECRET_KEY_BYTES:
        raise KeyringError(f"{path.name}: expected {SECRET_KEY_BYTES} bytes, found {len(key)}")
    return key


# ---------------------------------------------------------------------------- audit anchors


def load_audit_anchor_key(directory: Path) -> bytes:
    """The key that signs audit anchors. Raises :class:`KeyNotFound` where there is none."""
    path = directory / AUDIT_ANCHOR_KEY_FILE
    if not path.exists():
        raise KeyNotFound(
            f"no audit anchor key {path}; create it on the staff host with "
            "`flask --app intake audit anchor-key`"
        )
    return _read_random_key(path)


def _anchor_message(event_id: int, head_hash: str, anchored_at: str) -> bytes:
    return f"{AUDIT_ANCHOR_FORMAT}|{event_id}|{head_hash}|{anchored_at}".encode()


def audit_anchor_mac(key: bytes, event_id: int, head_hash: str, anchored_at: str) -> str:
    """HMAC-SHA256, in hex, over one anchor: the row id, its chain hash and the anchoring time."""
    message = _anchor_message(event_id, head_hash, anchored_at)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def audit_anchor_mac_matches(
    key: bytes, event_id: int, head_hash: str, anchored_at: str, mac: str
) -> bool:
    expected = audit_anchor_mac(key, event_id, head_hash, anchored_at)
    return hmac.compare_digest(expected, mac)


def _read_pair(public_path: Path, with_private: bool, passphrase: bytes | None) -> _KeyPair:
    try:
        record = json.loads(public_path.read_bytes())
        key_id = record["key_id"]
        suite = record["suite"]
        if suite not in _SUITES:
            raise KeyringError(f"{public_path.name}: unknown suite {suite!r}")
        public = _load_public(record)
        retired = record.get("retired_at")
        created_at = datetime.fromisoformat(record["created_at"])
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise KeyringError(
            f"{public_path.name}: unreadable key record ({type(error).__name__})"
        ) from error
    private_path = public_path.with_name(f"{key_id}{PRIVATE_SUFFIX}")
    private = None
    if with_private and private_path.exists():
        private = _load_private(private_path, record, passphrase)
    info = KeyInfo(
        key_id=key_id,
        suite=suite,
        created_at=created_at,
        dev=bool(record.get("dev")),
        retired_at=datetime.fromisoformat(retired) if retired else None,
        has_private=private_path.exists(),
    )
    return _KeyPair(info, public, private)


def export_public_keys(source: Path, destination: Path) -> list[str]:
    """Copy what a patient-surface server needs, and nothing private, to ``destination``."""
    destination.mkdir(mode=0o700, parents=True, exist_ok=True)
    destination.chmod(0o700)
    copied: list[str] = []
    for path in [*sorted(source.glob(f"*{PUBLIC_SUFFIX}")), source / BLIND_INDEX_FILE]:
        if path.exists():
            _replace_secret_file(destination / path.name, path.read_bytes())
            copied.append(path.name)
    return copied


def staff_secret_files(directory: Path) -> list[Path]:
    """Files a patient host must never hold: private keys and the audit anchor key."""
    anchor_key = directory / AUDIT_ANCHOR_KEY_FILE
    return private_key_files(directory) + ([anchor_key] if anchor_key.is_file() else [])


def private_key_files(directory: Path) -> list[Path]:
    """Files in ``directory`` holding a private key, whatever they are called.

    A public deployment must have none: not ``*.private.pem``, and not a renamed copy either.
    """
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.endswith(PUBLIC_SUFFIX):
            continue
        if path.name in (BLIND_INDEX_FILE, AUDIT_ANCHOR_KEY_FILE):
            continue
        if path.name.endswith(PRIVATE_SUFFIX) or b"PRIVATE KEY-----" in path.read_bytes()[:65536]:
            found.append(path)
    return found
