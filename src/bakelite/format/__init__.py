"""bakelite.format."""
