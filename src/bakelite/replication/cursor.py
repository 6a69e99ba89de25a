"""The local replication cursor: what has been shipped, and so what ships next.

Written atomically (temp, fsync, rename, fsync dir) to ``.bakelite/<name>.cursor`` only after the
objects it covers are durable on every sync destination.  It alone decides what ships next after a
restart; the backend's objects decide what is restorable.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bakelite.fsutil import atomic_write_json, state_dir
from bakelite.replication.waltracker import WalPosition

CURSOR_VERSION = 1


@dataclass(frozen=True)
class ReplicaCursor:
    """Shipped position of one database within its current backup."""

    db_path: str
    st_dev: int
    st_ino: int
    page_size: int
    backup: str
    seq: int  # last shipped commit (0 = the snapshot)
    last_key: str
    last_link: str  # chain link of the last object: the next change-set's ``prev``
    last_time: float  # commit time of the last shipped commit
    position: WalPosition | None  # WAL position after the last shipped commit
    # The database file as of the last save: if the WAL restarted while the daemon was down but
    # the file is untouched (no checkpoint ran), the new generation holds every later commit.
    db_size: int
    db_mtime_ns: int
    codec: str
    encrypted: bool
    changesets: int = 0  # change-sets shipped in this backup
    saved_at: float = 0.0  # wall-clock time of the save (the mtime rule needs a margin, see shipper)
    key_id: str | None = None  # the encryption key the backup is sealed with (None: plaintext)
    version: int = CURSOR_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        d = asdict(self)
        d["position"] = None if self.position is None else self.position.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReplicaCursor:
        """Parse the JSON form (raises KeyError/TypeError/ValueError when malformed)."""
        fields = dict(d)
        fields["position"] = WalPosition.from_dict(d.get("position"))
        return cls(**fields)


def cursor_path(db_path: Path, name: str) -> Path:
    """Where the cursor of database ``name`` lives."""
    return state_dir(db_path) / f"{name}.cursor"


def load_cursor(db_path: Path, name: str) -> ReplicaCursor | None:
    """The saved cursor, or None if absent or unreadable (then a new backup is taken)."""
    path = cursor_path(db_path, name)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
        cur = ReplicaCursor.from_dict(data)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None
    if cur.version > CURSOR_VERSION:
        return None
    return cur


def save_cursor(db_path: Path, name: str, cursor: ReplicaCursor) -> None:
    """Durably replace the cursor."""
    path = cursor_path(db_path, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, cursor.to_dict())
