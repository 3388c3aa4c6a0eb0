"""Browser cost of rendering a streaming reply: 2,000 vs 20,000 tokens, and a plain-text baseline.

    scripts/services.sh start && . .run/services/env
    .venv/bin/python bench/ui_render.py                  # 2000 and 20000 tokens
    .venv/bin/python bench/ui_render.py --tokens 2000,10000,20000 --pace-ms 1

What runs (all on 127.0.0.1, started here and stopped at the end, also on error):
  - the offline Claude, streaming `[[offline words=N pace_ms=F]]` (N tokens of lorem ipsum with a
    line break every 12 words: one long paragraph-per-line Markdown text);
  - the app: one Daphne process against a database of its own (PostgreSQL `claudeweb_bench_ui_<pid>`
    next to the one DATABASE_URL names, dropped at the end; else a temporary SQLite file);
  - headless Chromium (Playwright), 1280×800, logged in, one new conversation per measurement.

Per N, two measurements in the same page and run:
  - app: the reply streamed through the socket and rendered by the page (throttled incremental
    Markdown while streaming, one full render at the end);
  - baseline: the same delta texts, at the same moments, appended as plain text (a Text node's
    appendData) to an element of the same page: what the network and a DOM with no Markdown cost.

Metrics, from send to the reply's `done` (baseline: first to last append):
  - main-thread time: CDP `Performance.getMetrics` TaskDuration after − before (all main-thread
    tasks: script, style, layout, paint); script time: ScriptDuration after − before;
  - longest task and long-task total: a PerformanceObserver for `longtask` (tasks ≥ 50 ms);
  - ratio 20k/2k of main-thread time: linear rendering gives ~10×; quadratic would give ~100×.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bench-ui", "bench-ui-password-123"

OBSERVER_JS = """() => {
  window.__longTasks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longTasks.push(e.duration);
  }).observe({ type: "longtask", buffered: false });
}"""

BASELINE_JS = """async (deltas) => {
  window.__longTasks = [];
  const box = document.createElement("div");
  box.className = "message-body plain";
  const text = document.createTextNode("");
  box.append(text);
  document.getElementById("messages").append(box);
  const t0 = performance.now();
  for (const [at, piece] of deltas) {
    const wait = at - (performance.now() - t0);
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    text.appendData(piece);
    box.scrollIntoView({ block: "end" });
  }
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  return text.length;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(tmp: Path) -> tuple[str, str | None]:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{tmp / 'bench.sqlite3'}", None
    import psycopg

    name = f"claudeweb_bench_ui_{os.getpid()}"
    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres")).replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    return urlunsplit(parts._replace(path=f"/{name}")), admin


def drop_database(admin: str | None, url: str) -> None:
    if admin is None:
        return
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def metrics(cdp) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def measure_app(page, cdp, app: str, tokens: int, pace_ms: float) -> tuple[dict, list]:
    page.goto(app + "/")
    page.get_by_test_id("new-chat").click()
    page.wait_for_url("**/c/*/")
    page.wait_for_selector('[data-testid="connection-status"][data-state="open"]')
    deltas: list[tuple[float, str]] = []
    start = [0.0]

    def on_socket(ws):
        def on_frame(payload):
            frame = json.loads(payload)
            if frame.get("type") == "delta":
                deltas.append(((time.perf_counter() - start[0]) * 1000, frame["text"]))

        ws.on("framereceived", on_frame)

    page.on("websocket", on_socket)
    page.reload()  # reconnect, so the socket is seen by the listener
    page.wait_for_selector('[data-testid="connection-status"][data-state="open"]')
    page.evaluate(OBSERVER_JS)
    before = metrics(cdp)
    start[0] = time.perf_counter()
    page.get_by_test_id("composer").fill(f"[[offline words={tokens} pace_ms={pace_ms}]]")
    page.get_by_test_id("composer").press("Enter")
    page.wait_for_selector(
        '[data-role="assistant"][data-status="done"]', timeout=max(60_000, tokens * 20)
    )
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)))")
    wall = time.perf_counter() - start[0]
    after = metrics(cdp)
    long_tasks = page.evaluate("() => window.__longTasks")
    words = page.evaluate(
        "() => document.querySelector('[data-role=assistant] [data-testid=message-body]')"
        ".textContent.trim().split(/\\s+/).length"
    )
    page.remove_listener("websocket", on_socket)
    return summary(before, after, long_tasks, wall, len(deltas), words), deltas


def measure_baseline(page, cdp, deltas: list) -> dict:
    page.evaluate(OBSERVER_JS)
    before = metrics(cdp)
    t0 = time.perf_counter()
    page.evaluate(BASELINE_JS, deltas)
    wall = time.perf_counter() - t0
    after = metrics(cdp)
    long_tasks = page.evaluate("() => window.__longTasks")
    return summary(before, after, long_tasks, wall, len(deltas), None)


def summary(before, after, long_tasks, wall, frames, words) -> dict:
    return {
        "task_ms": (after["TaskDuration"] - before["TaskDuration"]) * 1000,
        "script_ms": (after["ScriptDuration"] - before["ScriptDuration"]) * 1000,
        "longest_ms": max(long_tasks, default=0.0),
        "long_total_ms": sum(long_tasks),
        "long_count": len(long_tasks),
        "wall_s": wall,
        "frames": frames,
        "words": words,
    }


def start_stack(tmp: Path, env_base: dict) -> tuple[list, str, str, str | None]:
    procs = []
    offline = subprocess.Popen(
        [sys.executable, "-m", "offline_claude", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    procs.append(offline)
    line = offline.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"offline Claude did not start: {line!r}")
    db_url, admin = database_url(tmp)
    env = dict(
        env_base,
        DJANGO_DEBUG="true",
        DATABASE_URL=db_url,
        ANTHROPIC_BASE_URL=line.rsplit(" ", 1)[-1].strip(),
        ANTHROPIC_API_KEY="bench-key",
        CLAUDE_MAX_RETRIES="0",
        CLAUDE_MAX_OUTPUT_TOKENS="32000",
        CONVERSATION_TOKEN_BUDGET="100000000",
        RATE_SENDS_PER_MINUTE="1000",
        DEMO_USERNAME=USER,
        DEMO_PASSWORD=PASSWORD,
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    env.pop("REDIS_URL", None)  # one process: the in-memory channel layer
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=ROOT)
    subprocess.run(
        [*manage, "ensure_demo_user"], env=env, check=True, cwd=ROOT, capture_output=True
    )
    port = free_port()
    log = open(tmp / "daphne.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "claudeweb.server",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "claudeweb.asgi:application",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    procs.append(server)
    app = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(app + "/login/", timeout=2).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "daphne.log").read_text()) from None
            time.sleep(0.1)
    return procs, app, db_url, admin


def row(label: str, m: dict) -> str:
    return (
        f"{label:<22} {m['task_ms']:>10.0f} {m['script_ms']:>10.0f} {m['longest_ms']:>9.0f}"
        f" {m['long_total_ms']:>9.0f} {m['long_count']:>6} {m['frames']:>7} {m['wall_s']:>7.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", default="2000,20000", help="comma-separated reply lengths")
    parser.add_argument(
        "--pace-ms", type=float, default=1.0, help="offline model's delay per token"
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.tokens.split(",")]

    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    procs, app, db_url, admin = start_stack(tmp, dict(os.environ))
    results: dict[int, tuple[dict, dict]] = {}
    try:
        executable = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
            )
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(app + "/login/")
            page.get_by_test_id("login-username").fill(USER)
            page.get_by_test_id("login-password").fill(PASSWORD)
            page.get_by_test_id("login-submit").click()
            page.wait_for_url(app + "/")
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
            measure_app(page, cdp, app, 200, args.pace_ms)  # warm caches and the JIT
            for n in sizes:
                cdp = context.new_cdp_session(page)
                cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
                streamed, deltas = measure_app(page, cdp, app, n, args.pace_ms)
                baseline = measure_baseline(page, cdp, deltas)
                if streamed["words"] != n:
                    print(f"warning: {n} tokens asked, {streamed['words']} words rendered")
                results[n] = (streamed, baseline)
            browser.close()
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=10)
        drop_database(admin, db_url)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nChromium {os.uname().machine}, pace {args.pace_ms} ms/token, times in ms (wall in s)")
    print(
        f"{'':<22} {'main-thr':>10} {'script':>10} {'longest':>9} {'long sum':>9}"
        f" {'#long':>6} {'frames':>7} {'wall':>7}"
    )
    for n, (streamed, baseline) in results.items():
        print(row(f"app {n:,} tokens", streamed))
        print(row(f"baseline {n:,} tokens", baseline))
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        factor = large / small
        app_ratio = results[large][0]["task_ms"] / max(results[small][0]["task_ms"], 1e-9)
        base_ratio = results[large][1]["task_ms"] / max(results[small][1]["task_ms"], 1e-9)
        app_vs_base = results[large][0]["task_ms"] / max(results[large][1]["task_ms"], 1e-9)
        print(
            f"\nratio {large:,}/{small:,} ({factor:.0f}× the tokens): main-thread time app"
            f" {app_ratio:.1f}×, baseline {base_ratio:.1f}×;"
            f" app / baseline at {large:,}: {app_vs_base:.1f}×"
        )


if __name__ == "__main__":
    main()
