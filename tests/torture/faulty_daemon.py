"""The real daemon with a fault-injecting wrapper around each sync destination (torture harness).

    python tests/torture/faulty_daemon.py CONFIG PLAN SEED [OUTAGE_FILE]

Runs the same ``Supervisor`` as ``bakelite daemon``, but every destination is
``RetryingStorage(FaultyStorage(real backend, PLAN, SEED))``; ``PLAN0|PLAN1|…`` gives the i-th
sync destination its own plan.  While OUTAGE_FILE exists, every
backend call fails (a full outage).  Crash outcomes in PLAN SIGKILL this process.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from bakelite.config.load import load_config
from bakelite.config.model import Database
from bakelite.daemon.supervisor import Supervisor
from bakelite.storage.base import Storage
from bakelite.storage.faulty import FaultyStorage
from bakelite.storage.registry import open_storage
from bakelite.storage.retry import RetryingStorage


def main() -> int:
    config_path, plan, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    outage_file = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config(config_path)
    faulty: list[FaultyStorage] = []

    # "PLAN0|PLAN1|..." gives each sync destination its own plan (asymmetric faults); one plan is shared.
    plans = plan.split("|")

    def open_storages(db: Database) -> list[Storage]:
        out: list[Storage] = []
        for i, backend in enumerate(db.sync_backends):
            own = plans[i % len(plans)]
            f = FaultyStorage(open_storage(backend), own, seed=seed + len(faulty))
            faulty.append(f)
            out.append(RetryingStorage(f, attempts=3, base_delay=0.02, max_delay=0.2))
        return out

    sup = Supervisor(config.databases, open_storages)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sup.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if outage_file is not None:

        def watch_outage() -> None:
            while True:
                on = outage_file.exists()
                for f in faulty:
                    f.set_outage(on)
                time.sleep(0.02)

        threading.Thread(target=watch_outage, daemon=True).start()
    sup.run()
    injected = sum(len(f.injected) for f in faulty)
    print(f"faults injected: {injected}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
