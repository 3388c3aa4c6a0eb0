"""Lighthouse on the chat page, logged in, with a conversation: mobile and desktop.

    scripts/services.sh start && . .run/services/env
    (cd bench/lighthouse && npm ci)                       # Lighthouse, pinned by package-lock.json
    .venv/bin/python bench/lighthouse.py                  # this checkout, plus the login page
    .venv/bin/python bench/lighthouse.py --baseline-ref 7eca876 --runs 3

What runs (all on 127.0.0.1, started here and stopped at the end, also on error):
  - the offline Claude and the app as the browser tests serve it (`tests/support/servers.py`:
    Daphne, DJANGO_DEBUG on, static files from the finders, as under `make run`), on a PostgreSQL
    database of its own next to DATABASE_URL's (dropped at the end; else a SQLite file);
  - headless Chromium (CHROMIUM_PATH, as the browser tests find it) with a debugging port;
    Playwright logs in through it and writes one exchange whose reply has a heading, a list, a
    table and a Python code block;
  - Lighthouse (bench/lighthouse/node_modules) in that same browser (so with that session)
    against `/c/<id>/`, with its default mobile settings (Moto G Power, simulated slow 4G, 4× CPU
    slowdown) and with `--preset=desktop`.

Recorded per run: the four category scores (performance, accessibility, best practices, SEO), the
cumulative layout shift, first and largest contentful paint and total blocking time; the median
over --runs runs is printed. Baselines in the same run:
the login page of the same server (a page without the chat's scripts: what this machine and
server give a simple page) and, with --baseline-ref REF, the chat page of the app as it was at
commit REF (`git archive`, same database, same conversation). The JSON reports are written to
$TEST_ARTIFACTS_DIR (default test-artifacts/) as lighthouse-<page>-<form factor>-<run>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.servers import (  # noqa: E402
    AppServer,
    app_environment,
    drop_database,
    free_port,
    fresh_database,
    offline_claude,
)

LIGHTHOUSE = ROOT / "bench" / "lighthouse" / "node_modules" / ".bin" / "lighthouse"
USER, PASSWORD = "bench-lighthouse", "bench-lighthouse-password-1"
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
# The metrics printed next to the scores (milliseconds): first and largest contentful paint,
# total blocking time.
METRICS = {
    "fcp": "first-contentful-paint",
    "lcp": "largest-contentful-paint",
    "tbt": "total-blocking-time",
}
CHROME_FLAGS = "--headless=new --no-sandbox --disable-gpu --no-first-run --disable-sync"
# The reply of the measured conversation: what the chat page renders beyond plain text.
REPLY = """[[offline reply]]
## Reading a CSV file

Python's standard library reads it line by line:

1. open the file with `newline=""`;
2. hand it to `csv.DictReader`;
3. convert the fields you need.

| column | type |
| --- | --- |
| name | str |
| amount | Decimal |

```python
import csv
from decimal import Decimal

def total(path: str) -> Decimal:
    \"\"\"The sum of the `amount` column.\"\"\"
    with open(path, newline="") as f:
        return sum((Decimal(row["amount"]) for row in csv.DictReader(f)), Decimal(0))
```
"""


def start_chromium(tmp: Path, profile: str = "logged-in") -> tuple[subprocess.Popen, int]:
    """Headless Chromium with a debugging port: Playwright logs in through it, and Lighthouse
    then runs in the same browser, with that session's cookie (Lighthouse's documented way to
    audit a page behind a login)."""
    executable = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    port = free_port()
    proc = subprocess.Popen(
        [
            executable,
            *CHROME_FLAGS.split(),
            "--window-size=1280,800",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={tmp / profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=2).read()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("Chromium did not start") from None
            time.sleep(0.1)


def seed_conversation(app: str, port: int) -> str:
    """Logs in, writes one exchange; returns the chat page's path."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
        page = browser.contexts[0].new_page()
        page.goto(app + "/login/")
        page.get_by_test_id("login-username").fill(USER)
        page.get_by_test_id("login-password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        page.wait_for_url(app + "/")
        # The first page has the message box; the first send creates the conversation.
        page.get_by_test_id("composer").fill("How do I add up a CSV column?\n" + REPLY)
        page.get_by_test_id("send").click()
        page.wait_for_selector('[data-role="assistant"][data-status="done"]', timeout=30_000)
        page.wait_for_url("**/c/*/", wait_until="commit")
        path = page.url.removeprefix(app)
        page.close()
    return path


def lighthouse(url: str, port: int, form_factor: str, out: Path) -> dict:
    cmd = [
        str(LIGHTHOUSE),
        url,
        "--quiet",
        f"--port={port}",
        "--output=json",
        f"--output-path={out}",
        f"--only-categories={','.join(CATEGORIES)}",
    ]
    if form_factor == "desktop":
        cmd.append("--preset=desktop")
    # Lighthouse now and then fails to record the trace (NO_NAVSTART) on a loaded machine: such a
    # run is made again, at most twice, and said so.
    for attempt in range(3):
        done = subprocess.run(cmd, timeout=300, capture_output=True, text=True)
        report = json.loads(out.read_text()) if done.returncode == 0 else {}
        if done.returncode == 0 and not report.get("runtimeError"):
            break
        print(f"Lighthouse failed ({attempt + 1}/3): {done.stderr.strip()[-300:]}", file=sys.stderr)
    else:
        raise RuntimeError(f"Lighthouse failed three times on {url}")
    if report["finalDisplayedUrl"] != url:
        raise RuntimeError(f"Lighthouse measured {report['finalDisplayedUrl']}, not {url}")
    scores = {c: round(100 * (report["categories"][c]["score"] or 0)) for c in CATEGORIES}
    scores["cls"] = report["audits"]["cumulative-layout-shift"]["numericValue"]
    for key, audit in METRICS.items():
        scores[key] = report["audits"][audit]["numericValue"]
    scores["failed"] = sorted(
        audit_id
        for audit_id, audit in report["audits"].items()
        if audit.get("score") is not None
        and audit["score"] < 0.9
        and audit.get("scoreDisplayMode") in ("binary", "numeric", "metricSavings")
    )
    return scores


def measure(label: str, url: str, port: int, runs: int, artifacts: Path) -> dict[str, dict]:
    results = {}
    for form_factor in ("mobile", "desktop"):
        runs_ = [
            lighthouse(
                url, port, form_factor, artifacts / f"lighthouse-{label}-{form_factor}-{i}.json"
            )
            for i in range(runs)
        ]
        median = {k: statistics.median(r[k] for r in runs_) for k in (*CATEGORIES, "cls", *METRICS)}
        median["failed"] = sorted({a for r in runs_ for a in r["failed"]})
        results[form_factor] = median
    return results


def baseline_tree(ref: str, tmp: Path) -> Path:
    tree = tmp / f"tree-{ref}"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def _start_in(server: AppServer, cwd: Path) -> None:
    import tests.support.servers as servers

    saved = servers.ROOT
    servers.ROOT = cwd
    try:
        server.start()
    finally:
        servers.ROOT = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs", type=int, default=1, help="Lighthouse runs per page and form factor"
    )
    parser.add_argument(
        "--baseline-ref", help="also measure the chat page of the app at this commit"
    )
    args = parser.parse_args()
    if not LIGHTHOUSE.exists():
        sys.exit("Lighthouse is not installed: run `npm ci` in bench/lighthouse/")
    artifacts = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / "test-artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-lighthouse-"))
    database_url = fresh_database(f"claudeweb_bench_lh_{os.getpid()}", tmp)
    results: dict[str, dict] = {}
    try:
        with offline_claude() as claude_url:
            env = app_environment(
                database_url=database_url,
                claude_url=claude_url,
                DEMO_USERNAME=USER,
                DEMO_PASSWORD=PASSWORD,
            )
            env.pop("REDIS_URL", None)  # one process: the in-memory channel layer
            server = AppServer(env, tmp)
            server.manage("migrate", "-v", "0")
            server.manage("ensure_demo_user")
            server.start()
            chromium, port = start_chromium(tmp)
            try:
                path = seed_conversation(server.url, port)
                results["chat"] = measure("chat", server.url + path, port, args.runs, artifacts)
                server.stop()
                if args.baseline_ref:
                    tree = baseline_tree(args.baseline_ref, tmp)
                    # The archived tree's code first: `python -m` puts the working directory on
                    # sys.path; PYTHONPATH covers the rest.
                    server = AppServer(dict(env, PYTHONPATH=str(tree)), tmp)
                    _start_in(server, tree)
                    label = f"chat at {args.baseline_ref}"
                    results[label] = measure(
                        "baseline", server.url + path, port, args.runs, artifacts
                    )
                    server.stop()
                # Logged out (a fresh profile): the login page, a page without the chat's scripts.
                chromium.terminate()
                chromium.wait(timeout=10)
                chromium, port = start_chromium(tmp, profile="logged-out")
                server = AppServer(env, tmp)
                server.start()
                results["login page"] = measure(
                    "login", server.url + "/login/", port, args.runs, artifacts
                )
            finally:
                server.stop()
                chromium.terminate()
                chromium.wait(timeout=10)
    finally:
        drop_database(database_url)
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args.runs)


def report(results: dict[str, dict], runs: int) -> None:
    version = subprocess.run([str(LIGHTHOUSE), "--version"], capture_output=True, text=True).stdout
    print(f"\nLighthouse {version.strip()}, median of {runs} run(s)")
    print(
        f"{'page':<24} {'form':<8} {'perf':>5} {'a11y':>5} {'best':>5} {'seo':>5} {'CLS':>7}"
        f" {'FCP s':>6} {'LCP s':>6} {'TBT ms':>7}  audits below 0.9"
    )
    for page, by_form in results.items():
        for form, r in by_form.items():
            print(
                f"{page:<24} {form:<8} {r['performance']:>5.0f} {r['accessibility']:>5.0f}"
                f" {r['best-practices']:>5.0f} {r['seo']:>5.0f} {r['cls']:>7.3f}"
                f" {r['fcp'] / 1000:>6.2f} {r['lcp'] / 1000:>6.2f} {r['tbt']:>7.0f}"
                f"  {', '.join(r['failed']) or '–'}"
            )


if __name__ == "__main__":
    main()
