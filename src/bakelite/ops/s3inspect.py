"""S3 bucket-level inspections for ``usage`` and ``doctor``: hidden overhead and Object Lock.

Both need calls a plain listing does not make (ListObjectVersions, ListMultipartUploads,
GetObjectLockConfiguration) and, like the multipart sweep, static credentials from the
environment.  When they cannot run (another backend, no static credentials, a permission the IAM
policy withholds) they say "not inspected" / "unverifiable" with the reason instead of failing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from bakelite.config.model import Database, S3Backend
from bakelite.errors import BakeliteError, PermanentBackendError
from bakelite.ops.reclaim import NO_STATIC_CREDENTIALS, NOT_S3, find_s3
from bakelite.storage.base import Storage

logger = logging.getLogger(__name__)

CheckStatus = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class S3Overhead:
    """What an S3 bucket stores under a prefix beyond the current objects a listing shows."""

    backend: str
    prefix: str
    inspected: bool
    reason: str | None = None  # why not inspected
    versioning: str | None = None  # "Enabled", "Suspended" or "Disabled"
    noncurrent_versions: int = 0
    noncurrent_bytes: int = 0
    delete_markers: int = 0
    incomplete_uploads: int = 0
    incomplete_upload_bytes: int = 0

    @property
    def hidden_bytes(self) -> int:
        """Billed bytes a plain listing cannot see."""
        return self.noncurrent_bytes + self.incomplete_upload_bytes


def overhead(storage: Storage, prefix: str = "") -> S3Overhead:
    """Noncurrent versions, delete markers and incomplete multipart uploads under ``prefix``."""
    found = find_s3(storage)
    where = storage.describe()
    if found is None:
        return S3Overhead(where, prefix, False, NOT_S3)
    s3, wrapper_prefix = found
    if not s3.credentials.static:
        return S3Overhead(where, prefix, False, NO_STATIC_CREDENTIALS)
    full = wrapper_prefix + prefix
    try:
        versions = s3.version_overhead(full)
        uploads = s3.list_multipart_uploads(full)
        upload_bytes = sum(s3.multipart_upload_size(u) for u in uploads)
    except PermanentBackendError as e:
        # Typically a policy without s3:ListBucketVersions / s3:ListBucketMultipartUploads.
        return S3Overhead(where, prefix, False, e.one_line())
    return S3Overhead(
        where,
        prefix,
        True,
        versioning=versions.versioning,
        noncurrent_versions=versions.noncurrent_versions,
        noncurrent_bytes=versions.noncurrent_bytes,
        delete_markers=versions.delete_markers,
        incomplete_uploads=len(uploads),
        incomplete_upload_bytes=upload_bytes,
    )


@dataclass(frozen=True)
class ObjectLockCheck:
    """``expect_object_lock`` checked against the bucket: ok, fail (not locked) or warn (unverifiable)."""

    backend: str
    status: CheckStatus
    message: str
    verified: bool
    enabled: bool | None = None
    mode: str | None = None
    retention: str | None = None


def check_object_lock(storage: Storage) -> ObjectLockCheck:
    """Whether the bucket behind ``storage`` has Object Lock with a default retention."""
    found = find_s3(storage)
    where = storage.describe()
    if found is None:
        return ObjectLockCheck(where, "warn", f"Object Lock unverifiable: {NOT_S3}", False)
    s3, _ = found
    if not s3.credentials.static:
        return ObjectLockCheck(where, "warn", f"Object Lock unverifiable: {NO_STATIC_CREDENTIALS}", False)
    try:
        lock = s3.object_lock()
    except BakeliteError as e:
        hint = "grant s3:GetBucketObjectLockConfiguration" if isinstance(e, PermanentBackendError) else ""
        message = f"Object Lock unverifiable: {e.one_line()}" + (f" ({hint})" if hint else "")
        return ObjectLockCheck(where, "warn", message, False)
    if not lock.enabled:
        return ObjectLockCheck(
            where, "fail", f"bucket {s3.bucket} does not have Object Lock enabled", True, False
        )
    if lock.retention is None:
        return ObjectLockCheck(
            where,
            "fail",
            f"bucket {s3.bucket} has Object Lock enabled but no default retention: "
            "the objects bakelite writes are not locked",
            True,
            True,
        )
    return ObjectLockCheck(
        where,
        "ok",
        f"Object Lock {lock.mode}, default retention {lock.retention}",
        True,
        True,
        lock.mode,
        lock.retention,
    )


def object_lock_advice(db: Database, backend: S3Backend, check: ObjectLockCheck) -> list[str]:
    """Warnings for settings that fight a locked bucket (pruning, compaction, no checksum)."""
    if not check.enabled:
        return []
    out: list[str] = []
    if db.retention > 0 or db.max_total_size or db.max_backups:
        out.append(
            "retention/limits prune backups, but the Object Lock refuses or outlives the deletes: "
            'set retention = "0s" and no max_total_size/max_backups, and let the lock plus a '
            "lifecycle rule govern expiry"
        )
    if db.compaction_levels:
        out.append(
            "compaction writes merged objects it then cannot delete under Object Lock: "
            "set compaction_levels = []"
        )
    if not backend.checksum:
        out.append("a bucket with Object Lock rejects uploads without a checksum: set checksum = true")
    return out
