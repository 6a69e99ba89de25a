"""Generate a WAL-mode database of realistic mixed content, deterministically from a seed.

Three tables with indexes: ``users`` (short text, a unique index), ``events`` (short notes, two
indexes) and ``attachments`` (2–20 KiB blobs, most of the bytes).  Text is drawn from a word list and
blobs from a skewed byte distribution, so the file compresses about 2–3× with ``zstd -3`` and without
long-range repeats that would flatter a compressor.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
from _util import RESULTS

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "order",
    "invoice",
    "payment",
    "refund",
    "shipped",
    "pending",
    "cancelled",
    "account",
    "login",
    "logout",
    "session",
    "token",
    "update",
    "create",
    "delete",
    "archive",
    "user",
    "admin",
    "guest",
    "report",
    "export",
    "import",
    "sync",
    "backup",
    "restore",
    "error",
    "warning",
    "notice",
    "debug",
    "trace",
    "metric",
]
KINDS = ["login", "logout", "view", "click", "purchase", "refund", "upload", "share", "comment", "like"]
MIMES = ["image/png", "image/jpeg", "application/pdf", "text/plain", "application/json"]

SCHEMA = """
CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                   country TEXT NOT NULL, created INTEGER NOT NULL);
CREATE INDEX users_country ON users(country);
CREATE TABLE events(id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, kind TEXT NOT NULL,
                    ts INTEGER NOT NULL, note TEXT NOT NULL);
CREATE INDEX events_user_ts ON events(user_id, ts);
CREATE INDEX events_kind ON events(kind);
CREATE TABLE attachments(id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, name TEXT NOT NULL,
                         mime TEXT NOT NULL, size INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX attachments_user ON attachments(user_id);
"""

# Blob content: 30% of blobs are binary (random bytes, like images or archives: incompressible), 70%
# are text-like (pseudo-words drawn from a Zipf distribution over a 4,096-word vocabulary).
# Bump when the content changes: cached databases are keyed by it.
GEN_VERSION = 2
BINARY_SHARE = 0.3
_VOCAB_RNG = np.random.default_rng(12345)
_SYLL = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "da", "zo", "gu", "be", "fa", "in", "or"]
_VOCAB = [
    "".join(_SYLL[j] for j in _VOCAB_RNG.integers(0, len(_SYLL), int(_VOCAB_RNG.integers(1, 5)))) + " "
    for _ in range(4096)
]
_VBYTES = np.frombuffer("".join(_VOCAB).encode(), dtype=np.uint8)
_VLEN = np.array([len(w) for w in _VOCAB], dtype=np.int64)
_VOFF = np.concatenate([[0], np.cumsum(_VLEN)[:-1]])
_ZIPF = 1.0 / np.arange(1, 4097) ** 1.1
_ZIPF /= _ZIPF.sum()


def _words(nrng: np.random.Generator, nbytes: int) -> bytes:
    """About ``nbytes`` of Zipf-distributed pseudo-words (vectorised)."""
    n = nbytes // 4 + 16
    idx = nrng.choice(4096, size=n, p=_ZIPF)
    lens = _VLEN[idx]
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    total = int(starts[-1] + lens[-1])
    src = np.repeat(_VOFF[idx] - starts, lens) + np.arange(total)
    return _VBYTES[src][:nbytes].tobytes()


def _blobs(nrng: np.random.Generator, sizes: list[int], binary: list[bool]) -> list[bytes]:
    text = _words(nrng, sum(s for s, b in zip(sizes, binary, strict=True) if not b))
    rand = nrng.bytes(sum(s for s, b in zip(sizes, binary, strict=True) if b))
    out: list[bytes] = []
    ti = ri = 0
    for s, b in zip(sizes, binary, strict=True):
        if b:
            out.append(rand[ri : ri + s])
            ri += s
        else:
            out.append(text[ti : ti + s])
            ti += s
    return out


def _text(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def generate(path: Path, target_mib: int, seed: int = 42) -> Path:
    """Create ``path`` (WAL mode, checkpointed) of about ``target_mib`` MiB."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-262144")
    con.executescript(SCHEMA)
    target = target_mib * 1024 * 1024
    n_users = max(1000, target_mib * 100)
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO users(id, email, name, country, created) VALUES (?, ?, ?, ?, ?)",
        (
            (
                i,
                f"{rng.choice(WORDS)}.{rng.choice(WORDS)}{i}@example.{rng.choice(['com', 'org', 'net'])}",
                f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}",
                rng.choice(["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "AU", "NL"]),
                1_600_000_000 + rng.randrange(10**8),
            )
            for i in range(1, n_users + 1)
        ),
    )
    con.execute("COMMIT")
    ev_id = att_id = 0
    size = 0
    while size < target:
        con.execute("BEGIN")
        # ~70% of the bytes in blobs, the rest in events.
        sizes = [rng.randint(2048, 20480) for _ in range(400)]
        blobs = _blobs(nrng, sizes, [rng.random() < BINARY_SHARE for _ in sizes])
        rows = []
        for s, blob in zip(sizes, blobs, strict=True):
            att_id += 1
            rows.append(
                (
                    att_id,
                    rng.randint(1, n_users),
                    f"{rng.choice(WORDS)}_{att_id}.bin",
                    rng.choice(MIMES),
                    s,
                    blob,
                )
            )
        con.executemany(
            "INSERT INTO attachments(id, user_id, name, mime, size, data) VALUES (?, ?, ?, ?, ?, ?)", rows
        )
        events = []
        for _ in range(12_000):
            ev_id += 1
            events.append(
                (
                    ev_id,
                    rng.randint(1, n_users),
                    rng.choice(KINDS),
                    1_700_000_000 + ev_id * 7 + rng.randrange(7),
                    _text(rng, 2, 12),
                )
            )
        con.executemany("INSERT INTO events(id, user_id, kind, ts, note) VALUES (?, ?, ?, ?, ?)", events)
        con.execute("COMMIT")
        size = con.execute("PRAGMA page_count").fetchone()[0] * con.execute("PRAGMA page_size").fetchone()[0]
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return path


def cached(target_mib: int, seed: int = 42) -> Path:
    """The generated database for (size, seed), made once and kept under ``bench/results/cache``."""
    cache = RESULTS / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"mixed-v{GEN_VERSION}-{target_mib}MiB-seed{seed}.db"
    done = path.with_suffix(".done")
    if not done.exists():
        tmp = cache / f"tmp-{path.name}"
        generate(tmp, target_mib, seed)
        shutil.move(tmp, path)
        for suffix in ("-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        done.write_text("ok\n")
    return path


if __name__ == "__main__":
    import time

    t0 = time.time()
    out = generate(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 42)
    print(out, out.stat().st_size, f"{time.time() - t0:.1f}s")
