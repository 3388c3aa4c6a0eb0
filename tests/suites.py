"""A summary line per test suite (one suite per file): `faults: 21 passed`, `xss (browser): 5 passed`.

Loaded from tests/conftest.py. The lines are printed at the end of the pytest run and, when
TEST_SUITE_SUMMARY names a file, appended to it, so scripts/test.sh can repeat them after both
runs (unit and browser).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import PurePosixPath

# Files whose name alone says too little; the rest are named after the file.
NAMES = {
    "test_faults.py": "faults",
    "test_hostile_frames.py": "hostile frames",
    "test_hostile_uploads.py": "hostile uploads",
    "test_access_matrix.py": "access matrix",
    "test_access.py": "access and ownership",
    "test_limits.py": "abuse limits",
    "test_chat_errors.py": "chat errors",
    "test_xss_browser.py": "xss (browser)",
}

# A test's outcome is the worst of its phases (setup, call, teardown).
RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 2, "error": 3, "failed": 4}


def suite_name(nodeid: str) -> str:
    path = PurePosixPath(nodeid.split("::", 1)[0])
    if path.name in NAMES:
        return NAMES[path.name]
    stem = path.stem.removeprefix("test_").removesuffix("_test")
    browser = stem.endswith("_browser") or "e2e" in path.parts
    stem = stem.removesuffix("_browser").replace("_", " ")
    return f"{stem} (browser)" if browser else stem


def outcomes_by_suite(stats: dict) -> dict[str, Counter]:
    worst: dict[str, str] = {}
    for key, reports in stats.items():
        if key not in RANK:
            continue
        for report in reports:
            nodeid = getattr(report, "nodeid", "")
            if not nodeid:
                continue
            outcome = key
            if key == "failed" and getattr(report, "when", "call") != "call":
                outcome = "error"
            if RANK[outcome] >= RANK.get(worst.get(nodeid, "passed"), 0):
                worst[nodeid] = outcome
    suites: dict[str, Counter] = defaultdict(Counter)
    for nodeid, outcome in worst.items():
        suites[suite_name(nodeid)][outcome] += 1
    return dict(sorted(suites.items()))


def summary_lines(stats: dict) -> list[str]:
    lines = []
    for name, counts in outcomes_by_suite(stats).items():
        parts = [f"{counts[k]} {k}" for k in RANK if counts[k]]
        lines.append(f"{name}: {', '.join(parts)}")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = summary_lines(terminalreporter.stats)
    if not lines:
        return
    terminalreporter.section("suites")
    for line in lines:
        terminalreporter.write_line(line)
    target = os.environ.get("TEST_SUITE_SUMMARY")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
