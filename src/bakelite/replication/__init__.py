"""bakelite.replication."""
