"""Shared test set-up: make the test helpers (harness, workload, replica_builder) importable."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
