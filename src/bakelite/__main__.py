"""``python -m bakelite``: the same entry point as the ``bakelite`` console script."""

import sys

from bakelite.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
