"""Memory and latency of finishing image uploads: N concurrent finishes of large JPEGs.

    scripts/services.sh start && . .run/services/env
    .venv/bin/python bench/upload_memory.py                       # 20 finishes of 6000×4000
    .venv/bin/python bench/upload_memory.py --n 10 --baseline-ref d256fa5

What runs (on 127.0.0.1; started here, stopped at the end, also on error):
  - the local S3 that `scripts/services.sh` started (AWS_S3_ENDPOINT_URL), used as the app uses it;
  - the PostgreSQL database `claudeweb_bench_uploads` next to DATABASE_URL's (dropped at the end);
  - per phase a fresh Daphne process (`python -m claudeweb.server`, production settings), so its
    peak RSS (VmHWM in /proc/<pid>/status) is that phase's alone.

Per phase, one user starts N uploads (through the ORM in this process, as `start` does), posts a
generated JPEG (a 6000×4000 photo-like image, quality 90) to each presigned POST, then sends the N
`POST /attachments/<id>/finish/` at once from N threads. A finish answered 503 `busy` is sent
again after its Retry-After, as the browser does; its latency is from the first send to the
verified answer. Measured: the server's RSS before the finishes and its peak (VmHWM, and VmRSS
sampled every 10 ms), finish latency p50 / max, busy answers, wall time.

Phases (the baseline in the same run):
  - `unbounded, whole decode`: IMAGE_VERIFY_CONCURRENCY=N and JPEG draft decoding switched off in
    the server (an experiment in a settings module of the bench, not a setting of the app);
  - `unbounded, reduced decode`: IMAGE_VERIFY_CONCURRENCY=N;
  - `K=2, reduced decode`: the defaults;
  - with --baseline-ref REF, first: the app as it was at commit REF (`git archive`), unbounded.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relay import (  # noqa: E402
    PY,
    ROOT,
    Proc,
    django_setup,
    free_port,
    machine,
    make_logins,
    migrate,
    recreate_database,
    server_env,
    wait_http,
)

BENCH_DB = "claudeweb_bench_uploads"
NO_DRAFT = (
    "# Experiment, not the app's code: JPEGs decode whole, as before reduced decoding.\n"
    "from PIL import JpegImagePlugin\n"
    "JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None\n"
)


@dataclass
class Phase:
    label: str
    concurrency: int | None  # None: the setting does not exist in that code
    draft: bool = True
    ref: str | None = None


def photo_jpeg(width: int, height: int) -> bytes:
    """A photo-like JPEG: smooth gradients in two channels, grain in the third."""
    from PIL import Image

    size = (width, height)
    img = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize(size),
            Image.radial_gradient("L").resize(size),
            Image.effect_noise(size, 24),
        ],
    )
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            self.peak_kib = max(self.peak_kib, status_kib(self.pid).get("VmRSS", 0))


def app_tree(ref: str, tmp: Path) -> Path:
    """The repository's files at `ref`, extracted to a directory of their own."""
    tree = tmp / f"tree-{ref}"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


class Server:
    """Daphne as deployed, from this checkout or an extracted tree."""

    def __init__(self, env: dict, logdir: Path, name: str, cwd: Path) -> None:
        port = free_port()
        args = [PY, "-m", "claudeweb.server", "-b", "127.0.0.1", "-p", str(port)]
        args.append("claudeweb.asgi:application")
        if cwd == ROOT:
            self.proc = Proc(name, args, env=env, logdir=logdir, ready_line=False)
        else:
            # Proc runs in this checkout; an older tree's modules must come first.
            path = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
            env = dict(env, PYTHONPATH=path)
            self.proc = Proc(name, ["sh", "-c", f'cd "{cwd}" && exec "$@"', "sh", *args],
                             env=env, logdir=logdir, ready_line=False)  # fmt: skip
        self.base = f"http://127.0.0.1:{port}"
        wait_http(self.base + "/bench-ready/", self.proc)


def start_uploads(username: str, data: bytes, n: int) -> list[int]:
    from django.contrib.auth.models import User

    from chat.uploads import attachments

    owner = User.objects.get(username=username)
    ids = []
    for _ in range(n):
        attachment, post = attachments.start_upload(
            owner=owner, content_type="image/jpeg", byte_size=len(data), name="photo.jpg"
        )
        response = requests.post(
            post["url"], data=post["fields"], files={"file": ("photo.jpg", data)}, timeout=60
        )
        response.raise_for_status()
        ids.append(attachment.pk)
    return ids


def finish(base: str, session_key: str, pk: int, deadline: float) -> dict:
    csrf = "b" * 32
    headers = {"Cookie": f"sessionid={session_key}; csrftoken={csrf}", "X-CSRFToken": csrf}
    t0 = time.perf_counter()
    busy = 0
    while True:
        response = requests.post(f"{base}/attachments/{pk}/finish/", headers=headers, timeout=120)
        if response.status_code == 503 and time.perf_counter() < deadline:
            busy += 1
            time.sleep(float(response.headers.get("Retry-After", "1")))  # the client's own wait
            continue
        try:
            body = response.json()
        except ValueError:
            body = {}
        return {
            "status": response.status_code,
            "state": body.get("state"),
            "latency": time.perf_counter() - t0,
            "busy": busy,
        }


def run_phase(phase: Phase, *, env: dict, login, data: bytes, n: int, tmp: Path) -> dict:
    env = dict(env, IMAGE_VERIFY_CONCURRENCY=str(phase.concurrency or n))
    logdir = tmp / phase.label.replace(" ", "_").replace(",", "")
    logdir.mkdir()
    if not phase.draft:
        (logdir / "bench_settings.py").write_text(
            "from claudeweb.settings import *  # noqa: F403\n" + NO_DRAFT
        )
        env.update(DJANGO_SETTINGS_MODULE="bench_settings", PYTHONPATH=str(logdir))
    cwd = app_tree(phase.ref, tmp) if phase.ref else ROOT
    ids = start_uploads(login.username, data, n)
    server = Server(env, logdir, "daphne", cwd)
    try:
        # Warm: the app's modules (Pillow, boto3) load on the first requests, not during the test.
        requests.get(server.base + "/attachments/limits/", timeout=30,
                     headers={"Cookie": f"sessionid={login.session_key}"})  # fmt: skip
        before = status_kib(server.proc.pid)["VmRSS"]
        sampler = RssSampler(server.proc.pid)
        sampler.start()
        results: list[dict] = [{}] * n
        deadline = time.perf_counter() + 120
        t0 = time.perf_counter()

        def one(i: int) -> None:
            results[i] = finish(server.base, login.session_key, ids[i], deadline)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t0
        sampler.done.set()
        sampler.join()
        status = status_kib(server.proc.pid)
    finally:
        server.proc.stop()
    latencies = sorted(r["latency"] for r in results)
    return {
        "label": phase.label,
        "verified": sum(r["state"] == "verified" for r in results),
        "other": sorted({r["status"] for r in results if r["state"] != "verified"}),
        "busy": sum(r["busy"] for r in results),
        "rss_before_mib": before / 1024,
        "hwm_mib": status["VmHWM"] / 1024,
        "sampled_peak_mib": sampler.peak_kib / 1024,
        "p50_s": statistics.median(latencies),
        "max_s": latencies[-1],
        "wall_s": wall,
    }


def print_rows(rows: list[dict], n: int) -> None:
    print(f"\n| phase ({n} finishes at once) | verified | busy answers | RSS before | peak RSS "
          "(VmHWM) | peak above start | latency p50 / max | wall |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in rows:
        other = f" (other: {r['other']})" if r["other"] else ""
        print(
            f"| {r['label']} | {r['verified']}{other} | {r['busy']} | {r['rss_before_mib']:.0f} MiB"
            f" | **{r['hwm_mib']:.0f} MiB** | {r['hwm_mib'] - r['rss_before_mib']:.0f} MiB"
            f" | {r['p50_s']:.1f} / {r['max_s']:.1f} s | {r['wall_s']:.1f} s |"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20, help="finishes at once (default 20)")
    parser.add_argument("--size", default="6000x4000", help="JPEG size, WxH (default 6000x4000)")
    parser.add_argument("--k", type=int, default=2, help="IMAGE_VERIFY_CONCURRENCY of the app")
    parser.add_argument("--baseline-ref", help="also run the app as it was at this commit")
    parser.add_argument(
        "--only-k", action="store_true", help="only the phase with IMAGE_VERIFY_CONCURRENCY=K"
    )
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE",
        help="an environment variable for the server (repeatable), e.g. MALLOC_ARENA_MAX=2",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")) or not os.environ.get(
        "AWS_S3_ENDPOINT_URL"
    ):
        raise SystemExit("needs PostgreSQL and the local S3: . .run/services/env")
    width, height = (int(v) for v in args.size.lower().split("x"))
    phases = [
        Phase("unbounded, whole decode", None, draft=False),
        Phase("unbounded, reduced decode", None),
        Phase(f"K={args.k}, reduced decode", args.k),
    ]
    if args.only_k:
        phases = phases[-1:]
    elif args.baseline_ref:
        phases.insert(0, Phase(f"at {args.baseline_ref}", None, ref=args.baseline_ref))
    print("machine:", machine())
    db_url = recreate_database(server_url, BENCH_DB)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-uploads-") as tmp_name:
            tmp = Path(tmp_name)
            env = server_env(database_url=db_url, redis_url=None, upstream="http://127.0.0.1:9",
                             layer="memory", logdir=tmp)  # fmt: skip
            # One user per phase: the in-flight cap (2 × IMAGE_MAX_PER_MESSAGE) and the start
            # rate are per user.
            env.update(item.split("=", 1) for item in args.server_env)
            env.update(IMAGE_MAX_PER_MESSAGE=str(max(10, args.n)),
                       RATE_UPLOADS_PER_MINUTE=str(max(30, 2 * args.n)))  # fmt: skip
            os.environ.update(IMAGE_MAX_PER_MESSAGE=env["IMAGE_MAX_PER_MESSAGE"],
                              RATE_UPLOADS_PER_MINUTE=env["RATE_UPLOADS_PER_MINUTE"])  # fmt: skip
            migrate(env)
            django_setup(db_url)
            logins = make_logins(len(phases), "bench-upload-")
            t0 = time.perf_counter()
            data = photo_jpeg(width, height)
            print(f"JPEG {width}×{height}: {len(data) / 2**20:.1f} MiB, made in "
                  f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
            for phase, login in zip(phases, logins, strict=True):
                row = run_phase(phase, env=env, login=login, data=data, n=args.n, tmp=tmp)
                rows.append(row)
                print_rows([row], args.n)
    finally:
        from django.db import connections

        connections.close_all()
        recreate_database(server_url, BENCH_DB, drop_only=True)
    print_rows(rows, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
