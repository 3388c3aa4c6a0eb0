"""`python -m claudeweb.server`: Daphne, on the event loop CLAUDEWEB_EVENT_LOOP names."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_faults import free_port

ROOT = Path(__file__).resolve().parent.parent


def serve_and_ask(loop: str | None) -> str:
    """Start the server on tests/loop_probe.py; the loop class it reports."""
    env = {k: v for k, v in os.environ.items() if k != "CLAUDEWEB_EVENT_LOOP"}
    if loop is not None:
        env["CLAUDEWEB_EVENT_LOOP"] = loop
    port = free_port()
    args = [sys.executable, "-m", "claudeweb.server", "-b", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(
        [*args, "tests.loop_probe:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    return answer.read().decode()
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(server.communicate(timeout=5)[1]) from None
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_daphne_runs_on_uvloop_by_default():
    assert serve_and_ask(None).startswith("uvloop.")


def test_asyncio_event_loop_on_request():
    assert serve_and_ask("asyncio").startswith("asyncio.")


def test_an_unknown_event_loop_is_refused_with_a_clear_error():
    done = subprocess.run(
        [sys.executable, "-m", "claudeweb.server", "--help"],
        cwd=ROOT,
        env={**os.environ, "CLAUDEWEB_EVENT_LOOP": "trio"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "CLAUDEWEB_EVENT_LOOP must be one of uvloop, asyncio, not 'trio'" in done.stderr


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_the_choice_is_made_before_daphne_makes_its_loop(choice):
    # Daphne makes its loop when daphne.server is imported: the policy must be set first.
    code = (
        f"import claudeweb.server as s; s.install_event_loop({choice!r});"
        "import daphne.server as d; print(type(d.twisted_loop).__module__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(choice)
