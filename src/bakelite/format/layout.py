"""Object keys: the only module that builds or parses them.

Per database ``db``::

    <db>/CURRENT                                   advisory pointer to the newest backup
    <db>/manifest                                  rebuildable cache of the listing
    <db>/KEYPARAMS                                 passphrase mode: Argon2id salt and costs (no secret)
    <db>/<backup>/snapshot                         the full backup's base image
    <db>/<backup>/L<level>/<first>-<last>          a change-set covering seqs first..last

A backup id is ``YYYYMMDDTHHMMSSmmmZ-<8 hex>``: it sorts by creation time.  Seqs are zero-padded so
lexical order is numeric order.  Keys are deterministic from (backup, level, first, last), so a crash
between "object durable" and "cursor written" replays into the same key.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from bakelite.errors import BakeliteError

SEQ_DIGITS = 12
_BACKUP_RE = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{8}$")
_CHANGESET_RE = re.compile(rf"^L(\d)/(\d{{{SEQ_DIGITS}}})-(\d{{{SEQ_DIGITS}}})$")


def new_backup_id(now: float | None = None) -> str:
    """A fresh backup id that sorts after every earlier one (millisecond clock + random suffix)."""
    t = time.time() if now is None else now
    stamp = datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%S")
    millis = int((t % 1) * 1000)
    return f"{stamp}{millis:03d}Z-{os.urandom(4).hex()}"


def backup_time(backup: str) -> float:
    """The creation time encoded in a backup id."""
    dt = datetime.strptime(backup[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return dt.timestamp() + int(backup[15:18]) / 1000


def is_backup_id(text: str) -> bool:
    """Whether ``text`` is a well-formed backup id."""
    return bool(_BACKUP_RE.match(text))


def db_prefix(db: str) -> str:
    """Listing prefix of every object of one database."""
    return f"{db}/"


def current_key(db: str) -> str:
    """Key of the advisory CURRENT pointer."""
    return f"{db}/CURRENT"


def manifest_key(db: str) -> str:
    """Key of the manifest cache."""
    return f"{db}/manifest"


def keyparams_key(db: str) -> str:
    """Key of the cleartext key-derivation parameters (passphrase mode); not a data object."""
    return f"{db}/KEYPARAMS"


def backup_prefix(db: str, backup: str) -> str:
    """Listing prefix of one backup's objects."""
    return f"{db}/{backup}/"


def snapshot_key(db: str, backup: str) -> str:
    """Key of a backup's base snapshot."""
    return f"{db}/{backup}/snapshot"


def changeset_key(db: str, backup: str, level: int, first: int, last: int) -> str:
    """Key of the change-set covering seqs ``first..last`` at compaction ``level``."""
    if not 0 <= level <= 9 or not 1 <= first <= last:
        raise ValueError(f"bad change-set position L{level} {first}-{last}")
    return f"{db}/{backup}/L{level}/{first:0{SEQ_DIGITS}d}-{last:0{SEQ_DIGITS}d}"


@dataclass(frozen=True, order=True)
class ObjectRef:
    """A parsed data-object key."""

    backup: str
    kind: str  # "snapshot" | "changeset"
    level: int = 0
    first: int = 0
    last: int = 0
    key: str = ""


def parse_key(db: str, key: str) -> ObjectRef | None:
    """Parse a data-object key of ``db``; ``None`` for CURRENT, manifest, KEYPARAMS or anything foreign."""
    prefix = db_prefix(db)
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    backup, sep, tail = rest.partition("/")
    if not sep or not is_backup_id(backup):
        return None
    if tail == "snapshot":
        return ObjectRef(backup=backup, kind="snapshot", key=key)
    m = _CHANGESET_RE.match(tail)
    if not m:
        return None
    level, first, last = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if first < 1 or first > last:
        return None
    return ObjectRef(backup=backup, kind="changeset", level=level, first=first, last=last, key=key)


class LayoutError(BakeliteError):
    """A key does not follow the replica layout."""
