"""`make prod`'s topology under supervisord: a Daphne process killed with SIGKILL comes back by
itself and serves pages through nginx again; /metrics adds up the processes; stop ends all.

Starts scripts/prod.sh on a free port with a state directory of its own (the services of
scripts/services.sh, the database claudeweb_prod, the offline Claude) and stops it after.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROD = ROOT / "scripts" / "prod.sh"
BACK_TIMEOUT_S = 60

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, **headers: str) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except OSError:
        return 0, {}, b""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split(" ", 1)[0]
    except (OSError, IndexError):
        return "Z"


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    """The topology started by scripts/prod.sh (once for the file: a start takes about a
    minute on a busy 2-core machine); stopped, and checked stopped, after."""
    state = tmp_path_factory.mktemp("prod") / "prod"
    port = free_port()
    env = {
        **os.environ,
        "PROD_DIR": str(state),
        "PROD_PORT": str(port),
        "PROD_WORKERS": "2",
        "PROD_SKIP_DEMO_USER": "1",
        "START_TIMEOUT_S": "60",
    }
    env.pop("ANTHROPIC_API_KEY", None)  # the offline Claude

    def ctl(*args: str) -> str:
        out = subprocess.run(
            [str(ROOT / ".venv/bin/supervisorctl"), "-c", str(state / "supervisord.conf"), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip()

    started = subprocess.run(
        [str(PROD), "start"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield state, port, ctl
    finally:
        supervisord = (state / "supervisord.pid").read_text().strip()
        programs = [ctl("pid", name) for name in ("daphne-1", "daphne-2", "nginx", "maintenance")]
        stopped = subprocess.run(
            [str(PROD), "stop"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        for pid in [supervisord, *programs]:
            assert not (pid.isdigit() and int(pid) > 0 and alive(int(pid))), pid


def test_a_killed_daphne_comes_back_and_serves_through_nginx(prod):
    state, port, ctl = prod
    status = ctl("status")
    for name in ("daphne-1", "daphne-2", "nginx", "maintenance", "offline-claude"):
        assert f"{name} " in status and "RUNNING" in status.split(f"{name} ", 1)[1].split("\n")[0]
    daphne_port = (state / "daphne-1.port").read_text().strip()
    upstream = f"127.0.0.1:{daphne_port}"
    old_pid = int(ctl("pid", "daphne-1"))

    killed_at = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)

    # Back: supervisord started a new process, and nginx sends it a page to serve. Round robin
    # alternates, so a few requests reach it once it is up.
    new_pid = 0
    answered_at = served_at = None
    while time.monotonic() - killed_at < BACK_TIMEOUT_S:
        pid = ctl("pid", "daphne-1")
        new_pid = int(pid) if pid.isdigit() else 0
        fresh = new_pid and new_pid != old_pid and answered_at is None
        if fresh and get(f"http://{upstream}/healthz")[0] == 200:
            answered_at = time.monotonic()
        if answered_at is not None:
            code, headers, body = get(f"http://127.0.0.1:{port}/login/")
            if code == 200 and headers.get("X-Upstream") == upstream:
                served_at = time.monotonic()
                assert b"<form" in body
                break
        time.sleep(0.05)
    assert served_at is not None, f"daphne-1 not back through nginx in {BACK_TIMEOUT_S}s"
    assert new_pid != old_pid and not alive(old_pid)
    print(
        f"\ndaphne-1 back {answered_at - killed_at:.2f}s after SIGKILL; "
        f"serving through nginx after {served_at - killed_at:.2f}s"
    )


def test_metrics_through_nginx_add_up_both_processes_and_want_the_token(prod):
    state, port, ctl = prod
    token = (state / "metrics_token").read_text().strip()
    url = f"http://127.0.0.1:{port}/metrics"
    assert get(url)[0] == 404
    assert get(url, Authorization="Bearer wrong-token-0123456789")[0] == 404
    code, _, body = get(url, Authorization=f"Bearer {token}")
    assert code == 200
    assert b"claudeweb_sockets_open" in body
    # Multiprocess mode: each Daphne process keeps its values in the shared directory.
    files = {path.name for path in (state / "metrics").iterdir()}
    for name in ("daphne-1", "daphne-2"):
        assert f"gauge_livesum_{ctl('pid', name)}.db" in files
