"""The real servers the contract suite runs against (started once per session, on loopback)."""

from __future__ import annotations

from servers import azure_server, gcs_server, s3_server, sftp_server

__all__ = ["azure_server", "gcs_server", "s3_server", "sftp_server"]
