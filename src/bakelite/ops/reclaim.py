"""Abort orphaned S3 multipart uploads: the daemon's periodic sweep and ``bakelite reclaim``.

A snapshot streams to S3 as a multipart upload; one that fails is aborted at source, but a hard
crash (or the server going away mid-abort) can leave the parts behind, billed and invisible to a
listing.  ``sweep`` aborts the uploads under a prefix that are older than ``min_age`` (so an upload
in flight is never touched).  It needs static credentials from the environment, like the other
bucket-level inspections; without them, or on a backend that is not S3, it does nothing and says
why in its report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from bakelite.config.model import Backend, Database
from bakelite.errors import BakeliteError
from bakelite.format import layout
from bakelite.storage.base import Storage
from bakelite.storage.s3 import S3Storage

logger = logging.getLogger(__name__)

UploadOutcome = Literal["aborted", "would abort", "too young", "failed"]

NOT_S3 = "not an S3 backend"
NO_STATIC_CREDENTIALS = (
    "no static AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); "
    "the bucket's AbortIncompleteMultipartUpload lifecycle rule is the backstop"
)


@dataclass(frozen=True)
class UploadAction:
    """One incomplete upload the sweep found, and what it did with it."""

    key: str
    upload_id: str
    initiated: datetime
    age_seconds: float
    outcome: UploadOutcome
    error: str | None = None


@dataclass(frozen=True)
class ReclaimReport:
    """The sweep of one backend under one prefix; ``inspected`` is false when it could not run."""

    backend: str
    prefix: str
    inspected: bool
    reason: str | None
    dry_run: bool
    min_age_seconds: float
    uploads: tuple[UploadAction, ...] = ()
    database: str | None = None

    @property
    def aborted(self) -> int:
        """Uploads aborted (or, in a dry run, that would be)."""
        return sum(1 for u in self.uploads if u.outcome in ("aborted", "would abort"))

    @property
    def failed(self) -> int:
        """Uploads whose abort failed."""
        return sum(1 for u in self.uploads if u.outcome == "failed")


@dataclass(frozen=True)
class ReclaimResult:
    """What ``bakelite reclaim`` reports: one entry per database and backend."""

    reports: tuple[ReclaimReport, ...]

    @property
    def exit_code(self) -> int:
        """3 (operational error) if an abort failed, else 0."""
        return 3 if any(r.failed for r in self.reports) else 0


def find_s3(storage: Storage) -> tuple[S3Storage, str] | None:
    """The S3 backend under any wrappers (retrying, prefixed), and the key prefix they add."""
    prefix = ""
    current: object = storage
    for _ in range(16):  # wrappers nest a few levels at most; never loop forever
        if isinstance(current, S3Storage):
            return current, prefix
        inner = getattr(current, "inner", None)
        if inner is None:
            return None
        wrapper_prefix = getattr(current, "prefix", None)
        if isinstance(wrapper_prefix, str):
            prefix = wrapper_prefix + prefix
        current = inner
    return None


def sweep(
    storage: Storage,
    min_age: float,
    *,
    prefix: str = "",
    dry_run: bool = False,
    now: float | None = None,
) -> ReclaimReport:
    """Abort the multipart uploads under ``prefix`` older than ``min_age`` seconds."""
    found = find_s3(storage)
    if found is None:
        return ReclaimReport(storage.describe(), prefix, False, NOT_S3, dry_run, min_age)
    s3, wrapper_prefix = found
    if not s3.credentials.static:
        return ReclaimReport(storage.describe(), prefix, False, NO_STATIC_CREDENTIALS, dry_run, min_age)
    clock = time.time() if now is None else now
    actions: list[UploadAction] = []
    for up in s3.list_multipart_uploads(wrapper_prefix + prefix):
        age = clock - up.initiated
        outcome: UploadOutcome
        error = None
        if age < min_age:
            outcome = "too young"
        elif dry_run:
            outcome = "would abort"
        else:
            try:
                s3.abort_multipart_upload(up.key, up.upload_id)
                outcome = "aborted"
                logger.info(
                    "aborted an orphaned multipart upload of %s on %s (%.0fs old)",
                    up.key,
                    s3.describe(),
                    age,
                    extra={"key": up.key, "upload_id": up.upload_id},
                )
            except BakeliteError as e:
                outcome, error = "failed", e.one_line()
                logger.warning(
                    "could not abort the multipart upload of %s: %s",
                    up.key,
                    error,
                    extra={"key": up.key, "upload_id": up.upload_id},
                )
        relative = up.key[len(wrapper_prefix) :] if up.key.startswith(wrapper_prefix) else up.key
        initiated = datetime.fromtimestamp(up.initiated, UTC)
        actions.append(UploadAction(relative, up.upload_id, initiated, age, outcome, error))
    return ReclaimReport(storage.describe(), prefix, True, None, dry_run, min_age, tuple(actions))


def run(
    db: Database,
    *,
    min_age: float | None = None,
    dry_run: bool = False,
    open_storage: Callable[[Backend], Storage] | None = None,
) -> list[ReclaimReport]:
    """``sweep`` every destination of ``db`` under the database's own prefix."""
    if open_storage is None:
        from bakelite.storage.registry import open_storage as default_open

        open_storage = default_open
    age = db.multipart_min_age if min_age is None else min_age
    reports: list[ReclaimReport] = []
    for backend in db.backends:
        if backend.type != "s3":
            reports.append(
                ReclaimReport(backend.describe(), "", False, NOT_S3, dry_run, age, database=db.name)
            )
            continue
        storage = open_storage(backend)
        try:
            report = sweep(storage, age, prefix=layout.db_prefix(db.name), dry_run=dry_run)
        finally:
            storage.close()
        reports.append(
            ReclaimReport(
                report.backend,
                report.prefix,
                report.inspected,
                report.reason,
                report.dry_run,
                report.min_age_seconds,
                report.uploads,
                database=db.name,
            )
        )
    return reports


def render_text(result: ReclaimResult) -> str:
    """One line per database and backend, then one per upload found."""
    lines: list[str] = []
    for r in result.reports:
        head = f"{r.database or '-'}  {r.backend}"
        if not r.inspected:
            lines.append(f"{head}  not inspected: {r.reason}")
            continue
        if not r.uploads:
            lines.append(f"{head}  no incomplete multipart uploads")
            continue
        verb = "would abort" if r.dry_run else "aborted"
        summary = f"{len(r.uploads)} incomplete multipart upload(s): {r.aborted} {verb}"
        young = sum(1 for u in r.uploads if u.outcome == "too young")
        if young:
            summary += f", {young} younger than {_age(r.min_age_seconds)} kept"
        if r.failed:
            summary += f", {r.failed} failed"
        lines.append(f"{head}  {summary}")
        lines.extend(_upload_line(u) for u in r.uploads)
    return "\n".join(lines)


def _upload_line(u: UploadAction) -> str:
    line = f"  {u.outcome:<11}  {u.key}  started {_age(u.age_seconds)} ago"
    return line + (f"  ({u.error})" if u.error else "")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def summarize(reports: Sequence[ReclaimReport]) -> ReclaimResult:
    """The reports as the CLI's result."""
    return ReclaimResult(tuple(reports))
