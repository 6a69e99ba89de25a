"""At-rest encryption units: the key format, the AEAD, key and passphrase files, KEYPARAMS, and the
envelope's binding of every sealed frame and footer to the object's identity."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import struct
from pathlib import Path

import crc32c
import pytest

from bakelite.config.model import Database, Encryption
from bakelite.crypto import keys
from bakelite.crypto.aead import OVERHEAD, XChaCha20Poly1305, key_id
from bakelite.errors import CorruptionError, EncryptionError
from bakelite.format import layout
from bakelite.format.envelope import (
    ObjectHeader,
    ObjectReader,
    ObjectWriter,
    decode_object,
    encode_object,
    peek_header,
)
from bakelite.storage.memory import MemoryStorage

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


@pytest.fixture(autouse=True)
def fast_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap Argon2id costs for new KEYPARAMS (the stored costs are what a reader uses)."""
    monkeypatch.setattr(keys, "ARGON2_TIME_COST", 1)
    monkeypatch.setattr(keys, "ARGON2_MEMORY_KIB", 1024)
    monkeypatch.setattr(keys, "ARGON2_PARALLELISM", 1)
    monkeypatch.setattr(keys, "_preferred", {})


def header(**kw: object) -> ObjectHeader:
    base: dict[str, object] = dict(
        kind="changeset",
        db="app",
        backup="20260101T000000000Z-0000abcd",
        level=0,
        first=3,
        last=5,
        page_size=4096,
        codec="zstd",
        encrypted=True,
        created=1.5,
        prev="ab" * 32,
        meta={"db_pages": 9, "t_first": 1.0, "t_last": 2.0},
    )
    base.update(kw)
    return ObjectHeader(**base)  # type: ignore[arg-type]


FRAMES = [b"first frame " * 500, b"second frame " * 700, b"third " * 900]


# -- key format ---------------------------------------------------------------------------------


def test_key_text_round_trips_and_tolerates_case_and_whitespace() -> None:
    text = keys.format_key(KEY_A)
    assert text.startswith("BAKELITE-KEY-V1-") and len(text) == len("BAKELITE-KEY-V1-") + 58
    assert keys.parse_key(text) == KEY_A
    assert keys.parse_key("  " + text.lower()[:30] + "\n" + text.lower()[30:] + " \n") == KEY_A


def test_every_single_character_typo_is_caught_without_echoing_the_key() -> None:
    text = keys.format_key(KEY_A)
    body_start = len(keys.KEY_PREFIX)
    for i in range(body_start, len(text)):
        for replacement in "AQ7":
            if text[i] == replacement:
                continue
            typo = text[:i] + replacement + text[i + 1 :]
            try:
                got = keys.parse_key(typo)
            except EncryptionError as e:
                assert text[body_start:] not in e.one_line() and typo[body_start:] not in e.one_line()
                continue
            # Only the last character's two padding bits may change without changing the key.
            assert got == KEY_A and i == len(text) - 1


@pytest.mark.parametrize(
    "mangle, words",
    [
        (lambda t: t[:-5], "mistyped"),
        (lambda t: t + "AB", "mistyped"),
        (lambda t: t[:20] + "1" + t[21:], "not a key character"),
        (lambda t: t.replace("V1", "V2"), "V2"),
        (lambda t: t.replace("BAKELITE-KEY-V1-", ""), "not a bakelite key"),
        (lambda t: "", "not a bakelite key"),
    ],
)
def test_malformed_keys_are_refused_clearly(mangle: object, words: str) -> None:
    text = keys.format_key(KEY_A)
    with pytest.raises(EncryptionError) as e:
        keys.parse_key(mangle(text), "key file /k")  # type: ignore[operator]
    assert words in e.value.one_line() and "key file /k" in e.value.one_line()


def test_generated_keys_are_distinct_and_valid() -> None:
    a, b = keys.generate_key(), keys.generate_key()
    assert a != b and len(a) == 32
    assert keys.parse_key(keys.format_key(a)) == a


# -- AEAD ---------------------------------------------------------------------------------------


def test_aead_round_trip_random_nonces_and_binding() -> None:
    c = XChaCha20Poly1305(KEY_A)
    s1, s2 = c.seal(b"hello", b"ad"), c.seal(b"hello", b"ad")
    assert s1 != s2 and len(s1) == 5 + OVERHEAD
    assert c.open(s1, b"ad") == b"hello"
    for bad in (
        lambda: c.open(s1, b"other ad"),
        lambda: XChaCha20Poly1305(KEY_B).open(s1, b"ad"),
        lambda: c.open(s1[:-1] + bytes([s1[-1] ^ 1]), b"ad"),
        lambda: c.open(s1[:10], b"ad"),
    ):
        with pytest.raises(EncryptionError):
            bad()


def test_key_id_is_stable_distinct_and_not_the_key() -> None:
    c = XChaCha20Poly1305(KEY_A)
    assert c.key_id == key_id(KEY_A) != key_id(KEY_B)
    assert KEY_A.hex()[:16] not in c.key_id and "key_id=" in repr(c) and KEY_A.hex() not in repr(c)


# -- files --------------------------------------------------------------------------------------


def test_key_file_comments_blank_lines_and_permission_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "key.txt"
    path.write_text("# my key\n\n" + keys.format_key(KEY_A) + "\n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, "bakelite"):
        assert keys.read_key_file(path) == KEY_A
    assert not caplog.records
    shared = tmp_path / "shared.txt"
    shared.write_text(keys.format_key(KEY_B) + "\n")
    shared.chmod(0o644)
    with caplog.at_level(logging.WARNING, "bakelite"):
        assert keys.read_key_file(shared) == KEY_B
    assert any("group or others" in r.getMessage() and "0644" in r.getMessage() for r in caplog.records)
    assert all(keys.format_key(KEY_B)[16:] not in r.getMessage() for r in caplog.records)


def test_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(EncryptionError, match="not found"):
        keys.read_key_file(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n")
    with pytest.raises(EncryptionError, match="holds no key"):
        keys.read_key_file(empty)
    with pytest.raises(EncryptionError, match=r"directory|regular"):
        keys.read_key_file(tmp_path)


def test_passphrase_file_first_meaningful_line(tmp_path: Path) -> None:
    path = tmp_path / "pass.txt"
    path.write_text("\n# comment\n   \n  correct horse battery staple  \nsecond line\n")
    assert keys.read_passphrase_file(path) == "correct horse battery staple"
    blank = tmp_path / "blank.txt"
    blank.write_text("# only\n\n")
    with pytest.raises(EncryptionError, match="no passphrase"):
        keys.read_passphrase_file(blank)


def test_passphrase_normalization_is_the_same_for_every_source() -> None:
    assert keys.normalize_passphrase(" caf\u00e9 \n") == keys.normalize_passphrase("cafe\u0301")
    with pytest.raises(EncryptionError):
        keys.normalize_passphrase("   ")


def test_write_key_file_is_0600_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "k.txt"
    old = os.umask(0)
    try:
        keys.write_key_file(path, keys.format_key(KEY_A))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        keys.write_key_file(path, keys.format_key(KEY_B))
    assert keys.read_key_file(path) == KEY_A


# -- KEYPARAMS and cipher_for -------------------------------------------------------------------


def _db(enc: Encryption | None, name: str = "app") -> Database:
    return Database(name=name, path=Path("/nonexistent/app.db"), encryption=enc)


def test_cipher_for_key_sources(tmp_path: Path) -> None:
    assert keys.cipher_for(_db(None)) is None
    path = tmp_path / "k"
    path.write_text(keys.format_key(KEY_A))
    path.chmod(0o600)
    by_file = keys.cipher_for(_db(Encryption(key_file=path)))
    inline = keys.cipher_for(_db(Encryption(key=keys.format_key(KEY_A))))
    assert getattr(by_file, "key_id", None) == getattr(inline, "key_id", None) == key_id(KEY_A)


def test_passphrase_creates_keyparams_once_and_rederives_the_same_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = MemoryStorage()
    db = _db(Encryption(passphrase="correct horse"))
    first = keys.cipher_for(db, [storage])
    params = json.loads(storage.get("app/KEYPARAMS"))
    assert params["kdf"] == "argon2id" and params["key_id"] == getattr(first, "key_id", None)
    assert "correct horse" not in storage.get("app/KEYPARAMS").decode()
    assert layout.parse_key("app", "app/KEYPARAMS") is None
    # A fresh process: caches empty, only the passphrase and the replica.
    monkeypatch.setattr(keys, "_derived", {})
    calls: list[int] = []
    real = keys.hash_secret_raw
    monkeypatch.setattr(keys, "hash_secret_raw", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = keys.cipher_for(db, [storage])
    again2 = keys.cipher_for(db, [storage])
    assert getattr(again, "key_id", None) == getattr(first, "key_id", None)
    assert calls == [1], "Argon2id must run once per process"
    assert storage.get("app/KEYPARAMS") == json.dumps(params, indent=2, sort_keys=True).encode() + b"\n"
    assert again2 is not None


def test_wrong_passphrase_is_refused_before_use() -> None:
    storage = MemoryStorage()
    keys.cipher_for(_db(Encryption(passphrase="right one")), [storage])
    with pytest.raises(EncryptionError) as e:
        keys.cipher_for(_db(Encryption(passphrase="wrong one")), [storage])
    assert "does not match" in e.value.one_line() and "wrong one" not in e.value.one_line()


def test_read_only_commands_do_not_create_keyparams() -> None:
    storage = MemoryStorage()
    cipher = keys.cipher_for(_db(Encryption(passphrase="pw")), [storage], create=False)
    assert isinstance(cipher, keys.MissingKeyParams)
    assert storage.stat("app/KEYPARAMS") is None
    data, _ = encode_object(header(), FRAMES, XChaCha20Poly1305(KEY_A))
    # The header names the key: without KEYPARAMS no key can be derived, said plainly.
    with pytest.raises(EncryptionError, match="no KEYPARAMS"):
        decode_object(data, cipher=cipher)


def test_databases_sharing_a_passphrase_derive_once(monkeypatch: pytest.MonkeyPatch) -> None:
    storage = MemoryStorage()
    calls: list[int] = []
    real = keys.hash_secret_raw
    monkeypatch.setattr(keys, "hash_secret_raw", lambda *a, **k: calls.append(1) or real(*a, **k))
    ids = {
        getattr(keys.cipher_for(_db(Encryption(passphrase="shared"), f"db{i}"), [storage]), "key_id", None)
        for i in range(5)
    }
    assert len(ids) == 1 and len(calls) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"memory_kib": 1 << 40},
        {"time_cost": 0},
        {"salt": "00"},
        {"kdf": "scrypt"},
        {"format": "other"},
    ],
)
def test_implausible_keyparams_are_refused(change: dict[str, object]) -> None:
    storage = MemoryStorage()
    keys.cipher_for(_db(Encryption(passphrase="pw")), [storage])
    doc = json.loads(storage.get("app/KEYPARAMS"))
    doc.update(change)
    storage.put("app/KEYPARAMS", json.dumps(doc).encode())
    with pytest.raises(EncryptionError):
        keys.cipher_for(_db(Encryption(passphrase="pw")), [storage])


# -- envelope binding ---------------------------------------------------------------------------


def forge(data: bytes, *, header_changes: dict[str, object] | None = None, footer: object = None) -> bytes:
    """Rewrite an object's cleartext header and/or footer JSON and fix every CRC, as an attacker can."""
    magic, version, hlen = struct.unpack_from(">4sHI", data)
    hdict = json.loads(data[10 : 10 + hlen])
    hdict.update(header_changes or {})
    hbytes = json.dumps(hdict, sort_keys=True, separators=(",", ":")).encode()
    body = data[10 + hlen :]
    flen = struct.unpack(">I", data[-8:-4])[0]
    frames_part = body[: len(body) - 8 - flen]
    fdict = json.loads(data[-8 - flen : -8])
    if callable(footer):
        footer(fdict)
    fbytes = json.dumps(fdict, sort_keys=True, separators=(",", ":")).encode()
    out = struct.pack(">4sHI", magic, version, len(hbytes)) + hbytes + frames_part + fbytes
    out += struct.pack(">I", len(fbytes))
    return out + struct.pack(">I", crc32c.crc32c(out))


def split_frames(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(prefix+header, [frame header + stored], end marker + footer + tail)."""
    hlen = struct.unpack_from(">I", data, 6)[0]
    pos = 10 + hlen
    frames = []
    while True:
        stored_len, raw_len, crc = struct.unpack_from(">III", data, pos)
        if (stored_len, raw_len, crc) == (0, 0, 0):
            break
        frames.append(data[pos : pos + 12 + stored_len])
        pos += 12 + stored_len
    return data[: 10 + hlen], frames, data[pos:]


def rebuild(head: bytes, frames: list[bytes], tail_with_end: bytes, footer_fix: object) -> bytes:
    """Reassemble an object from parts, letting ``footer_fix`` edit the footer, with CRCs fixed."""
    return forge(head + b"".join(frames) + tail_with_end, footer=footer_fix)


def test_encrypted_round_trip_and_plaintext_objects_are_unchanged() -> None:
    cipher = XChaCha20Poly1305(KEY_A)
    data, footer = encode_object(header(), FRAMES, cipher)
    h, frames, f2 = decode_object(data, cipher=cipher, require_encrypted=True)
    assert frames == FRAMES and f2 == footer and h.key_id == cipher.key_id and footer.seal
    assert b"first frame" not in data
    plain, pfooter = encode_object(header(encrypted=False), FRAMES)
    raw_header = peek_header(plain)
    assert raw_header.key_id is None and pfooter.seal is None
    assert b"key_id" not in plain and b"seal" not in plain
    # Re-encryption keeps the content hash (the lineage link) exactly.
    assert pfooter.hash == footer.hash


def test_wrong_key_fails_naming_decryption() -> None:
    data, _ = encode_object(header(), FRAMES, XChaCha20Poly1305(KEY_A))
    with pytest.raises(EncryptionError) as e:
        decode_object(data, cipher=XChaCha20Poly1305(KEY_B))
    assert "decrypt" in e.value.one_line() and key_id(KEY_A) in e.value.one_line()
    # Without the key id in the header (stripped by an attacker) it is still a decryption failure.
    stripped = forge(data, header_changes={"key_id": None})
    with pytest.raises(EncryptionError, match="decrypt"):
        decode_object(stripped, cipher=XChaCha20Poly1305(KEY_B))
    with pytest.raises(EncryptionError, match="no encryption key"):
        decode_object(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"first": 4, "last": 6},  # moved to another position
        {"db": "other"},  # moved to another database
        {"backup": "20260101T000000000Z-ffffabcd"},  # moved to another backup
        {"level": 1},
        {"prev": "cd" * 32},  # re-chained
        {"meta": {"db_pages": 1, "t_first": 1.0, "t_last": 2.0}},
    ],
)
def test_relocated_object_with_forged_header_fails_authentication(changes: dict[str, object]) -> None:
    cipher = XChaCha20Poly1305(KEY_A)
    data, _ = encode_object(header(), FRAMES, cipher)
    forged = forge(data, header_changes=changes)
    with pytest.raises(CorruptionError, match="fails decryption"):
        decode_object(forged, cipher=cipher)


def test_frames_swapped_between_objects_or_reordered_fail() -> None:
    cipher = XChaCha20Poly1305(KEY_A)
    a, _ = encode_object(header(), FRAMES, cipher)
    b, _ = encode_object(header(first=6, last=7, prev="ef" * 32), FRAMES, cipher)
    ha, fa, ta = split_frames(a)
    _, fb, _ = split_frames(b)
    with pytest.raises(CorruptionError):
        decode_object(rebuild(ha, [fb[0], fa[1], fa[2]], ta, None), cipher=cipher)
    with pytest.raises(CorruptionError):
        decode_object(rebuild(ha, [fa[1], fa[0], fa[2]], ta, None), cipher=cipher)


def _consistent_footer(frames: list[bytes], plain_hash: str | None = None) -> object:
    """A footer edit making counts, sizes and payload BLAKE3 match ``frames`` (what an attacker can)."""
    import blake3

    def fix(f: dict[str, object]) -> None:
        stored = [fr[12:] for fr in frames]
        f["frames"] = len(frames)
        f["payload_bytes"] = sum(len(s) for s in stored)
        f["raw_bytes"] = sum(struct.unpack_from(">I", fr, 4)[0] for fr in frames)
        h = blake3.blake3()
        for s in stored:
            h.update(s)
        f["payload_blake3"] = h.hexdigest()
        if plain_hash is not None:
            f["hash"] = plain_hash

    return fix


def test_dropping_trailing_frames_fails_even_with_a_consistent_footer() -> None:
    cipher = XChaCha20Poly1305(KEY_A)
    data, _ = encode_object(header(), FRAMES, cipher)
    head, frames, tail = split_frames(data)
    kept = frames[:2]
    with pytest.raises(CorruptionError, match="the footer fails decryption"):
        decode_object(rebuild(head, kept, tail, _consistent_footer(kept)), cipher=cipher)


def test_dropping_every_frame_fails_although_the_empty_hash_is_computable() -> None:
    cipher = XChaCha20Poly1305(KEY_A)
    h = header()
    data, _ = encode_object(h, FRAMES, cipher)
    head, _, tail = split_frames(data)
    import blake3

    # With no frame left, the content hash needs no secret: only the footer seal stops this.
    empty_hash = h.content_hash(blake3.blake3().digest())
    forged = rebuild(head, [], tail, _consistent_footer([], empty_hash))
    with pytest.raises(CorruptionError, match="footer"):
        decode_object(forged, cipher=cipher)
    unsealed = forge(forged, footer=lambda f: f.pop("seal"))
    with pytest.raises(CorruptionError, match="not sealed"):
        decode_object(unsealed, cipher=cipher)


@pytest.mark.parametrize(
    "edit",
    [
        lambda f: f.update(frames=f["frames"] + 1),
        lambda f: f.update(raw_bytes=f["raw_bytes"] - 1),
        lambda f: f.update(hash="00" * 32),
        lambda f: f.update(seal="00" * 40),
    ],
)
def test_tampered_footer_fails(edit: object) -> None:
    cipher = XChaCha20Poly1305(KEY_A)
    data, _ = encode_object(header(), FRAMES, cipher)
    with pytest.raises(CorruptionError):
        decode_object(forge(data, footer=edit), cipher=cipher)


def test_plaintext_substitute_is_refused_under_require_encrypted() -> None:
    cipher = XChaCha20Poly1305(KEY_A)
    plain, _ = encode_object(header(encrypted=False), [b"attacker chosen"])
    with pytest.raises(EncryptionError, match="not encrypted"):
        decode_object(plain, cipher=cipher, require_encrypted=True)
    # The migration window: plaintext passes through, and is never mistaken for ciphertext.
    assert decode_object(plain, cipher=cipher, require_encrypted=False)[1] == [b"attacker chosen"]
    # Flipping the flag on a ciphertext object is no way around it either.
    data, _ = encode_object(header(), FRAMES, cipher)
    with pytest.raises(CorruptionError):
        decode_object(forge(data, header_changes={"encrypted": False}), cipher=cipher)


def test_reseal_from_compressed_frames_keeps_hash_and_changes_key() -> None:
    a, b = XChaCha20Poly1305(KEY_A), XChaCha20Poly1305(KEY_B)
    data, footer = encode_object(header(), FRAMES, a)
    reader = ObjectReader(io.BytesIO(data), "x", a)
    writer = ObjectWriter(dataclasses.replace(reader.header, key_id=None), b)
    resealed = b"".join(writer.chunks_compressed(reader.compressed_frames()))
    assert writer.footer is not None and writer.footer.hash == footer.hash
    h, frames, _ = decode_object(resealed, cipher=b, require_encrypted=True)
    assert frames == FRAMES and h.key_id == b.key_id
    with pytest.raises(EncryptionError, match="another key"):
        decode_object(resealed, cipher=a)


def test_keyparams_reach_a_destination_added_later() -> None:
    first, added = MemoryStorage(), MemoryStorage()
    db = _db(Encryption(passphrase="pw"))
    keys.cipher_for(db, [first])
    keys.cipher_for(db, [first, added], create=False)
    assert added.stat("app/KEYPARAMS") is None, "read-only commands write nothing"
    keys.cipher_for(db, [first, added])
    assert added.get("app/KEYPARAMS") == first.get("app/KEYPARAMS")
    # The added destination alone now serves a recovery host.
    alone = keys.cipher_for(db, [added], create=False)
    assert getattr(alone, "key_id", None) == json.loads(first.get("app/KEYPARAMS"))["key_id"]


def test_probe_key_reports_what_doctor_needs(tmp_path: Path) -> None:
    storage = MemoryStorage()
    data, _ = encode_object(header(), FRAMES, XChaCha20Poly1305(KEY_A))
    storage.put("app/obj", data)
    storage.put("app/plain", encode_object(header(encrypted=False), FRAMES)[0])
    right = _db(Encryption(key=keys.format_key(KEY_A)))
    assert key_id(KEY_A) in keys.probe_key(right, storage, "app/obj")
    with pytest.raises(EncryptionError, match="another key"):
        keys.probe_key(_db(Encryption(key=keys.format_key(KEY_B))), storage, "app/obj")
    with pytest.raises(EncryptionError, match="not encrypted"):
        keys.probe_key(right, storage, "app/plain")
    lax = _db(Encryption(key=keys.format_key(KEY_A), require_encrypted=False))
    assert "plaintext" in keys.probe_key(lax, storage, "app/plain")
    with pytest.raises(EncryptionError, match="not found"):
        keys.probe_key(_db(Encryption(key_file=tmp_path / "nope")), storage, "app/obj")
    assert "not configured" in keys.probe_key(_db(None), storage, "app/obj")
