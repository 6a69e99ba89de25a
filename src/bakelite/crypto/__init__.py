"""bakelite.crypto."""
