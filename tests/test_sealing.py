"""Sealing: round trips, and every way a blob must refuse to open."""

from __future__ import annotations

import json
import shutil
import stat
from datetime import date
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intake.sealing import (
    PAD_BLOCK,
    SUITE_CLASSIC,
    SUITE_HYBRID,
    KeyNotFound,
    Keyring,
    KeyringError,
    OpeningNotAllowed,
    SealedBlob,
    SealedDataInvalid,
    SealingError,
    generate_key,
    retire_key_files,
)

BINDING = "submissions:0192f7a0-0000-7000-8000-000000000001"
OTHER_BINDING = "submissions:0192f7a0-0000-7000-8000-000000000002"
SECRET = "Ana María O'Brien-Núñez · 1984-02-29 · ana@example.org".encode()


@pytest.fixture(params=[SUITE_HYBRID, SUITE_CLASSIC])
def keyring(request: pytest.FixtureRequest, tmp_path: Path) -> Keyring:
    generate_key(tmp_path / "keys", suite=request.param)
    return Keyring.load(tmp_path / "keys", with_private=True)


def test_round_trip(keyring: Keyring) -> None:
    blob = keyring.seal(SECRET, binding=BINDING)
    assert blob.key_id == keyring.sealing_key_id
    assert SECRET not in blob.ciphertext + blob.wrapped_key
    assert keyring.open(blob, binding=BINDING) == SECRET


def test_each_seal_uses_a_fresh_data_key(keyring: Keyring) -> None:
    first = keyring.seal(SECRET, binding=BINDING)
    second = keyring.seal(SECRET, binding=BINDING)
    assert first.ciphertext != second.ciphertext
    assert first.wrapped_key != second.wrapped_key


def test_ciphertext_length_reveals_only_a_size_band(keyring: Keyring) -> None:
    short = keyring.seal(b"x", binding=BINDING)
    longer = keyring.seal(b"x" * (PAD_BLOCK - 10), binding=BINDING)
    assert len(short.ciphertext) == len(longer.ciphertext)
    assert keyring.open(longer, binding=BINDING) == b"x" * (PAD_BLOCK - 10)


def test_empty_and_large_payloads_round_trip(keyring: Keyring) -> None:
    for payload in (b"", b"\x00" * 5, "✓".encode() * 20_000):
        assert keyring.open(keyring.seal(payload, binding=BINDING), binding=BINDING) == payload


def test_blob_moved_to_another_row_does_not_open(keyring: Keyring) -> None:
    blob = keyring.seal(SECRET, binding=BINDING)
    with pytest.raises(SealedDataInvalid):
        keyring.open(blob, binding=OTHER_BINDING)


def test_payload_swapped_between_rows_does_not_open(keyring: Keyring) -> None:
    mine = keyring.seal(SECRET, binding=BINDING)
    theirs = keyring.seal(b"someone else", binding=OTHER_BINDING)
    spliced = SealedBlob(mine.key_id, mine.wrapped_key, theirs.ciphertext)
    with pytest.raises(SealedDataInvalid):
        keyring.open(spliced, binding=BINDING)


@pytest.mark.parametrize("part", ["wrapped_key", "ciphertext"])
@pytest.mark.parametrize("position", [0, 1, 13, -17, -1])
def test_one_flipped_bit_is_rejected(keyring: Keyring, part: str, position: int) -> None:
    blob = keyring.seal(SECRET, binding=BINDING)
    data = bytearray(getattr(blob, part))
    data[position] ^= 0x01
    tampered = SealedBlob(
        blob.key_id,
        *(
            (bytes(data), blob.ciphertext)
            if part == "wrapped_key"
            else (blob.wrapped_key, bytes(data))
        ),
    )
    with pytest.raises(SealedDataInvalid):
        keyring.open(tampered, binding=BINDING)


def test_truncated_ciphertext_is_rejected(keyring: Keyring) -> None:
    blob = keyring.seal(SECRET, binding=BINDING)
    for cut in (0, 5, 13, len(blob.ciphertext) - 1):
        with pytest.raises(SealedDataInvalid):
            keyring.open(
                SealedBlob(blob.key_id, blob.wrapped_key, blob.ciphertext[:cut]), binding=BINDING
            )


def test_relabelled_key_id_is_rejected(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    old = generate_key(keys)
    blob = Keyring.load(keys, with_private=True).seal(SECRET, binding=BINDING)
    generate_key(keys)
    keyring = Keyring.load(keys, with_private=True)
    new_id = keyring.sealing_key_id
    assert new_id != old.key_id
    with pytest.raises(SealedDataInvalid):
        keyring.open(SealedBlob(new_id, blob.wrapped_key, blob.ciphertext), binding=BINDING)


def test_wrong_keyring_cannot_open(tmp_path: Path) -> None:
    generate_key(tmp_path / "a")
    blob = Keyring.load(tmp_path / "a", with_private=True).seal(SECRET, binding=BINDING)
    generate_key(tmp_path / "b")
    stranger = Keyring.load(tmp_path / "b", with_private=True)
    with pytest.raises(KeyNotFound):
        stranger.open(blob, binding=BINDING)


def test_private_key_must_match_its_public_record(tmp_path: Path) -> None:
    mine = generate_key(tmp_path / "a")
    generate_key(tmp_path / "b")
    foreign = next((tmp_path / "b").glob("*.private.pem"))
    shutil.copy(foreign, tmp_path / "a" / f"{mine.key_id}.private.pem")
    with pytest.raises(KeyringError, match="does not match"):
        Keyring.load(tmp_path / "a", with_private=True)


def test_key_id_is_bound_into_the_wrapped_key(tmp_path: Path) -> None:
    """The same key material under two ids: relabelling a blob's key id must still fail."""
    keys = tmp_path / "keys"
    original = generate_key(keys)
    record = json.loads((keys / f"{original.key_id}.public.json").read_text())
    twin_id = original.key_id + "-twin"
    record["key_id"] = twin_id
    (keys / f"{twin_id}.public.json").write_text(json.dumps(record))
    shutil.copy(keys / f"{original.key_id}.private.pem", keys / f"{twin_id}.private.pem")
    keyring = Keyring.load(keys, with_private=True)
    blob = keyring.seal(SECRET, binding=BINDING)
    other_id = original.key_id if blob.key_id == twin_id else twin_id
    assert keyring.open(blob, binding=BINDING) == SECRET
    with pytest.raises(SealedDataInvalid):
        keyring.open(SealedBlob(other_id, blob.wrapped_key, blob.ciphertext), binding=BINDING)


def test_forged_blob_with_a_short_body_is_the_modules_error(tmp_path: Path) -> None:
    """Anyone with the public key can make a blob that authenticates; it must still fail cleanly."""
    keys = tmp_path / "keys"
    generate_key(keys)
    keyring = Keyring.load(keys, with_private=True)
    genuine = keyring.seal(b"", binding=BINDING)
    data_key = keyring._unwrap(genuine, BINDING)
    nonce = b"\x00" * 12
    aad = f"intake/v1|payload|v1|{BINDING}".encode()
    for body in (b"", b"\x01", b"\x00\x00\x00\xff"):
        forged = bytes([1]) + nonce + AESGCM(data_key).encrypt(nonce, body, aad)
        with pytest.raises(SealedDataInvalid):
            keyring.open(SealedBlob(genuine.key_id, genuine.wrapped_key, forged), binding=BINDING)


@pytest.mark.parametrize("length", [0, 1, 31, 32, -1])
def test_truncated_wrapped_key_is_rejected(keyring: Keyring, length: int) -> None:
    blob = keyring.seal(SECRET, binding=BINDING)
    with pytest.raises(SealedDataInvalid):
        keyring.open(
            SealedBlob(blob.key_id, blob.wrapped_key[:length], blob.ciphertext), binding=BINDING
        )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_flipped_bit_anywhere_is_rejected(keyring: Keyring, data: st.DataObject) -> None:
    blob = keyring.seal(SECRET, binding=BINDING)
    joined = bytearray(blob.wrapped_key + blob.ciphertext)
    bit = data.draw(st.integers(min_value=0, max_value=len(joined) * 8 - 1))
    joined[bit // 8] ^= 1 << (bit % 8)
    cut = len(blob.wrapped_key)
    tampered = SealedBlob(blob.key_id, bytes(joined[:cut]), bytes(joined[cut:]))
    with pytest.raises(SealedDataInvalid):
        keyring.open(tampered, binding=BINDING)


def test_half_copied_key_files_are_keyring_errors(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    info = generate_key(keys)
    private = keys / f"{info.key_id}.private.pem"
    private.write_bytes(private.read_bytes()[:100])
    with pytest.raises(KeyringError):
        Keyring.load(keys, with_private=True)
    (keys / "blind-index.key").write_text("not base64!")
    with pytest.raises(KeyringError):
        Keyring.load(keys, with_private=False)


def test_public_only_keyring_seals_but_cannot_open(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_key(keys)
    public = Keyring.load(keys, with_private=False)
    blob = public.seal(SECRET, binding=BINDING)
    assert public.ready
    with pytest.raises(OpeningNotAllowed):
        public.open(blob, binding=BINDING)
    assert Keyring.load(keys, with_private=True).open(blob, binding=BINDING) == SECRET


def test_public_only_load_never_reads_private_files(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_key(keys)
    for private in keys.glob("*.private.pem"):
        private.write_bytes(b"garbage that would fail to parse")
        private.chmod(0)
    public = Keyring.load(keys, with_private=False)
    assert public.seal(SECRET, binding=BINDING).key_id == public.sealing_key_id


def test_errors_share_one_base_and_never_quote_plaintext(keyring: Keyring) -> None:
    blob = keyring.seal(SECRET, binding=BINDING)
    with pytest.raises(SealingError) as caught:
        keyring.open(blob, binding=OTHER_BINDING)
    assert SECRET.decode() not in str(caught.value)


def test_key_files_are_owner_only(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_key(keys)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    files = list(keys.iterdir())
    assert {p.suffix for p in files} == {".json", ".pem", ".key"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_passphrase_protected_private_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_key(keys, passphrase=b"correct horse battery staple")
    pem = next(keys.glob("*.private.pem")).read_bytes()
    assert pem.count(b"BEGIN ENCRYPTED PRIVATE KEY") == 2
    keyring = Keyring.load(keys, with_private=True, passphrase=b"correct horse battery staple")
    assert keyring.open(keyring.seal(SECRET, binding=BINDING), binding=BINDING) == SECRET
    with pytest.raises(KeyringError, match="wrong INTAKE_KEY_PASSPHRASE"):
        Keyring.load(keys, with_private=True, passphrase=b"wrong")
    with pytest.raises(KeyringError, match="set INTAKE_KEY_PASSPHRASE"):
        Keyring.load(keys, with_private=True)


def test_newest_active_key_seals_and_old_ones_still_open(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = generate_key(keys)
    old_blob = Keyring.load(keys, with_private=True).seal(SECRET, binding=BINDING)
    second = generate_key(keys)
    keyring = Keyring.load(keys, with_private=True)
    assert keyring.sealing_key_id == second.key_id
    assert old_blob.key_id == first.key_id
    assert keyring.open(old_blob, binding=BINDING) == SECRET
    moved = keyring.rewrap(old_blob, binding=BINDING)
    assert moved.key_id == second.key_id
    assert moved.ciphertext == old_blob.ciphertext  # rotation never rewrites the payload
    assert keyring.open(moved, binding=BINDING) == SECRET


def test_retired_key_cannot_open_and_does_not_seal(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = generate_key(keys)
    blob = Keyring.load(keys, with_private=True).seal(SECRET, binding=BINDING)
    second = generate_key(keys)
    retire_key_files(keys, first.key_id)
    keyring = Keyring.load(keys, with_private=True)
    assert not (keys / f"{first.key_id}.private.pem").exists()
    assert keyring.sealing_key_id == second.key_id
    with pytest.raises(KeyNotFound):
        keyring.open(blob, binding=BINDING)


def test_empty_keyring_cannot_seal(tmp_path: Path) -> None:
    keyring = Keyring.load(tmp_path / "nothing-here", with_private=True)
    assert not keyring.ready
    with pytest.raises(KeyNotFound, match="keys generate"):
        keyring.seal(SECRET, binding=BINDING)


def test_damaged_key_record_is_a_keyring_error(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_key(keys)
    next(keys.glob("*.public.json")).write_text("{not json")
    with pytest.raises(KeyringError):
        Keyring.load(keys, with_private=True)


def test_blind_index_normalizes_and_separates_domains(keyring: Keyring) -> None:
    assert keyring.email_index("  Ana@Example.ORG ") == keyring.email_index("ana@example.org")
    assert keyring.email_index("ana@example.org") != keyring.email_index("ana2@example.org")
    birthday = date(1984, 2, 29)
    assert keyring.email_birthday_index("ana@example.org", birthday) != keyring.email_index(
        "ana@example.org"
    )
    assert keyring.email_birthday_index(
        "ana@example.org", birthday
    ) != keyring.email_birthday_index("ana@example.org", date(1984, 3, 1))
    assert len(keyring.email_index("ana@example.org")) == 32


def test_blind_index_key_differs_per_keyring(tmp_path: Path) -> None:
    generate_key(tmp_path / "a")
    generate_key(tmp_path / "b")
    a = Keyring.load(tmp_path / "a", with_private=False)
    b = Keyring.load(tmp_path / "b", with_private=False)
    assert a.email_index("ana@example.org") != b.email_index("ana@example.org")


def test_payload_is_bound_to_its_row_even_for_a_key_holder(keyring: Keyring) -> None:
    """An insider with the private key re-wraps row A's data key for row B: still refused."""
    blob = keyring.seal(SECRET, binding=BINDING)
    data_key = keyring._unwrap(blob, BINDING)
    pair = keyring._pairs[blob.key_id]
    rewrapped_for_b = keyring._wrap(pair, data_key, OTHER_BINDING)
    moved = SealedBlob(blob.key_id, rewrapped_for_b, blob.ciphertext)
    with pytest.raises(SealedDataInvalid):
        keyring.open(moved, binding=OTHER_BINDING)


def test_hybrid_record_with_only_an_x25519_private_key_is_refused(tmp_path: Path) -> None:
    hybrid = generate_key(tmp_path / "a", suite=SUITE_HYBRID)
    generate_key(tmp_path / "b", suite=SUITE_CLASSIC)
    classic_pem = next((tmp_path / "b").glob("*.private.pem")).read_bytes()
    (tmp_path / "a" / f"{hybrid.key_id}.private.pem").write_bytes(classic_pem)
    with pytest.raises(KeyringError, match="does not hold the keys"):
        Keyring.load(tmp_path / "a", with_private=True)
