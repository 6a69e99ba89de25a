"""The human summary of a restore (the CLI prints it; ``--json`` prints the report itself)."""

from __future__ import annotations

from bakelite.ops.restore import RestoreReport
from bakelite.ops.timeparse import format_time
from bakelite.units import format_size


def render_restore_text(report: RestoreReport) -> str:
    """The restore summary, exactly as the operations guide shows it."""
    if report.skipped:
        return f'Skipped restore of "{report.database}": {report.skip_reason}'
    requested = "latest" if report.requested_at is None else format_time(report.requested_at.timestamp())
    landed = "-" if report.landed_at is None else format_time(report.landed_at.timestamp())
    lines = [
        f'Restored "{report.database}" -> {report.output}',
        f"  target: {requested} -> {landed}",
        f"  applied: full backup + {report.changesets_applied} incremental change-set(s)",
        f"  ✓ lineage verified: {report.lineage_verified}/{report.lineage_total} change-set(s), hashes match",
        f"  size: {report.db_pages} pages x {report.page_size} bytes ({format_size(report.db_bytes)})",
        f"  downloaded: {format_size_1dp(report.bytes_downloaded)}",
        f"  ✓ integrity_check: {report.integrity_check}",
    ]
    return "\n".join(lines)


def format_size_1dp(n: int) -> str:
    """IEC size with one decimal (``412.5 MiB``), bytes as a whole number."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
