"""bakelite.ops."""
