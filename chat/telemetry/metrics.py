"""The app's Prometheus metrics, one object each; /metrics (claudeweb/metrics.py) exposes them.

Each Daphne process counts its own. Under several processes, PROMETHEUS_MULTIPROC_DIR set in
every process's environment (before it starts) makes prometheus-client keep the values in
files there, and /metrics adds up every process's files: `make prod` does so. Gauges of
processes that died are dropped at the next scrape (`forget_dead_processes`); their counters
stay, as counters must.

Label values are bounded: models from the catalogue, error codes from chat.claude.errors,
the token kinds of chat.ledger.entries.METRIC_KINDS (and `web_search` for cost). Never a user,
a conversation or any text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

REPLIES_IN_FLIGHT = Gauge(
    "claudeweb_replies_in_flight",
    "Replies streaming now (from the start frame to the final one).",
    multiprocess_mode="livesum",
)
SOCKETS_OPEN = Gauge(
    "claudeweb_sockets_open",
    "Chat WebSockets open (logged in, on a conversation of their user).",
    multiprocess_mode="livesum",
)
DELTAS_RELAYED = Counter(
    "claudeweb_deltas_relayed",
    "Text deltas relayed from the Messages API to the tabs of a conversation.",
)
TIME_TO_FIRST_TOKEN = Histogram(
    "claudeweb_time_to_first_token_seconds",
    "From sending a streamed request to its first content delta, per API call.",
    ["model"],
    buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 21, 34, 60),
)
UPSTREAM_ERRORS = Counter(
    "claudeweb_upstream_errors",
    "Messages API calls that failed, by the error code the app gives them (docs/protocol.md).",
    ["code"],
)
LEDGER_COST = Counter(
    "claudeweb_ledger_cost_dollars",
    "USD recorded in the ledger, by model and kind (tokens by kind; web_search for searches).",
    ["model", "kind"],
)
LEDGER_TOKENS = Counter(
    "claudeweb_ledger_tokens",
    "Tokens recorded in the ledger, by model and kind (input, output, cache_read, cache_write).",
    ["model", "kind"],
)


_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def forget_dead_processes(directory: Path) -> list[int]:
    """Remove the live gauges of processes that no longer run (killed without a chance to clean
    up: SIGKILL, a crash); their counters and histograms stay. The pids removed."""
    from prometheus_client import multiprocess

    dead = set()
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        multiprocess.mark_process_dead(pid, str(directory))
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
