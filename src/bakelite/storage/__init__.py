"""bakelite.storage."""
