"""bakelite.config."""
