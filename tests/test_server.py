"""`python -m claudeweb.server`: Daphne, on the event loop CLAUDEWEB_EVENT_LOOP names."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.support.servers import AppServer

ROOT = Path(__file__).resolve().parent.parent


def serve_and_ask(loop: str | None) -> str:
    """Start the server on tests/loop_probe.py; the loop class it reports."""
    env = {k: v for k, v in os.environ.items() if k != "CLAUDEWEB_EVENT_LOOP"}
    if loop is not None:
        env["CLAUDEWEB_EVENT_LOOP"] = loop
    with tempfile.TemporaryDirectory() as tmp:
        server = AppServer(env, Path(tmp), app="tests.loop_probe:application", ready_path="/")
        server.start()
        try:
            with urllib.request.urlopen(server.url + "/", timeout=2) as answer:
                return answer.read().decode()
        finally:
            server.stop()


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
