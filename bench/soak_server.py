"""Daphne as `python -m claudeweb.server` runs it, plus a heap snapshot on SIGUSR1.

Started by `bench/soak.py --tracemalloc FRAMES` as
`python -X tracemalloc=FRAMES bench/soak_server.py [Daphne's arguments]`: on each SIGUSR1 it
collects garbage, then writes `snapshot-<n>.pickle` (tracemalloc.Snapshot.dump) to
$SOAK_SNAPSHOT_DIR, under a temporary name renamed when complete. The app itself has no such
hook.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def dump_snapshot(signum, frame) -> None:
    folder = Path(os.environ["SOAK_SNAPSHOT_DIR"])
    n = len(list(folder.glob("snapshot-*.pickle")))
    partial = folder / f".snapshot-{n}.partial"
    gc.collect()
    tracemalloc.take_snapshot().dump(str(partial))
    partial.rename(folder / f"snapshot-{n}.pickle")


if __name__ == "__main__":
    if not tracemalloc.is_tracing():
        sys.exit("run under python -X tracemalloc=FRAMES")
    signal.signal(signal.SIGUSR1, dump_snapshot)
    from claudeweb.server import main

    main()
