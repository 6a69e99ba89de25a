"""bakelite.cli."""
