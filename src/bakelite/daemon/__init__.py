"""bakelite.daemon."""
