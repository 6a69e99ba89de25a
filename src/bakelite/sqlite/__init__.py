"""bakelite.sqlite."""
