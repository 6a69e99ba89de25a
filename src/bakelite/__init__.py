"""bakelite: continuous backup and point-in-time restore for live SQLite databases."""

__version__ = "0.1.0"
