"""Idle connections: memory and CPU of 2,000 logged-in sockets held open on one Daphne process.

    scripts/services.sh start && . .run/services/env
    .venv/bin/python bench/idle.py                      # 2,000 sockets, Redis pub/sub layer
    .venv/bin/python bench/idle.py --sockets 500 --layer memory

One Daphne process (production settings) against the PostgreSQL database `claudeweb_bench_idle`
(dropped, created and migrated here) and a Redis of its own; every socket is a different user's
logged-in session (made through the ORM; cookie and Origin in the handshake) on its own
conversation, so each joins its own group, as tabs do. Measured on the server process:
  - RSS before (after a warm-up of 20 sockets, closed again), with every socket open and quiet
    for a few seconds, after one frame on each (an `invalid_frame` round trip that proves each
    socket is alive), and after all are closed; per connection = (open − before) / sockets;
  - CPU used while all of them sit idle for --idle-seconds (Daphne pings every 20 s);
  - the same for the bare relay (bench/bare_relay.py: `websockets`, no Django, no login) as the
    baseline.
Raises this process's open-files limit (RLIMIT_NOFILE, inherited by the servers) as needed.
Bounded by --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relay  # noqa: E402  (bench/relay.py: processes, logins, the client)

BENCH_DB = "claudeweb_bench_idle"


async def open_all(clients: list[relay.Client], concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: relay.Client) -> None:
        async with gate:
            await client.connect()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(c) for c in clients))
    return time.perf_counter() - t0


async def round_trip_all(clients: list[relay.Client]) -> int:
    """Send a frame the server refuses on every socket; count the answers (alive sockets)."""

    async def one(client: relay.Client) -> bool:
        try:
            await client.ws.send(json.dumps({"type": "ping"}))
            while True:
                frame = json.loads(await asyncio.wait_for(client.ws.recv(), 30))
                if frame.get("type") == "error":
                    return True
        except Exception:  # noqa: BLE001 (a dead socket is a result)
            return False

    results = await asyncio.gather(*(one(c) for c in clients if c.ws is not None))
    return sum(results)


def say(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)


async def measure(server: relay.Server, logins: list[relay.Login], args, app: bool) -> dict:
    pid = server.pids()[0]
    warm = [relay.Client(login, server.ws_base, server.origin) for login in logins[:20]]
    await open_all(warm, 20)
    if app:
        await round_trip_all(warm)
    await asyncio.gather(*(c.close() for c in warm))
    await asyncio.sleep(2)
    rss_before = relay.proc_rss(pid)

    clients = [relay.Client(login, server.ws_base, server.origin) for login in logins[20:]]
    say(f"warm; RSS {rss_before / 2**20:.1f} MiB; opening {len(clients)} sockets")
    connect_s = await open_all(clients, args.concurrency)
    opened = sum(1 for c in clients if c.ws is not None)
    say(f"{opened} open in {connect_s:.1f} s")
    await asyncio.sleep(3)
    rss_open = relay.proc_rss(pid)
    cpu0 = relay.proc_cpu_s(pid)
    await asyncio.sleep(args.idle_seconds)
    idle_cpu = relay.proc_cpu_s(pid) - cpu0
    rss_idle = relay.proc_rss(pid)
    say(f"idle {args.idle_seconds:g} s done; a frame on each socket")
    alive = await round_trip_all(clients) if app else opened
    say(f"{alive} answered")
    await asyncio.sleep(1)
    rss_after_frame = relay.proc_rss(pid)
    await asyncio.gather(*(c.close() for c in clients))
    await asyncio.sleep(3)
    rss_closed = relay.proc_rss(pid)
    n = max(1, opened)
    errors = sorted({c.error for c in clients if c.error})[:3]
    return {
        "sockets": len(clients),
        "opened": opened,
        "alive_after_idle": alive,
        "connect_s": round(connect_s, 1),
        "rss_mib_before": round(rss_before / 2**20, 1),
        "rss_mib_open": round(rss_open / 2**20, 1),
        "kib_per_socket": round((rss_open - rss_before) / 1024 / n, 1),
        "kib_per_socket_after_idle": round((rss_idle - rss_before) / 1024 / n, 1),
        "kib_per_socket_after_a_frame": round((rss_after_frame - rss_before) / 1024 / n, 1),
        "rss_mib_closed": round(rss_closed / 2**20, 1),
        "idle_cpu_ms_per_s": round(idle_cpu * 1000 / args.idle_seconds, 1),
        "errors": errors,
    }


def run(args: argparse.Namespace) -> dict:
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("DATABASE_URL must name PostgreSQL: . .run/services/env")
    relay.raise_fd_limit(2 * args.sockets + 1024)
    logdir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    results: dict = {"machine": relay.machine(), "layer": args.layer}
    print(f"machine: {results['machine']}\nlogs: {logdir}", flush=True)
    procs: list[relay.Proc] = []
    database_url = relay.recreate_database(server_url, BENCH_DB)
    try:
        redis_url = None
        if args.layer != "memory":
            redis, redis_url = relay.start_redis(logdir)
            procs.append(redis)
        # No reply is asked for: the upstream is never contacted.
        env = relay.server_env(
            database_url=database_url,
            redis_url=redis_url,
            upstream="http://127.0.0.1:9",
            layer=args.layer,
            logdir=logdir,
        )
        relay.migrate(env)
        relay.django_setup(database_url)
        logins = relay.make_logins(args.sockets + 20, "idle")
        for name in ("app", "bare"):
            if name == "app":
                server: relay.Server = relay.DaphneServer(env, logdir)
            else:
                server = relay.BareServer("http://127.0.0.1:9", 40, logdir)
            try:
                row = asyncio.run(measure(server, logins, args, app=name == "app"))
            finally:
                server.stop()
            results[name] = row
            print(f"{name}: {row}", flush=True)
        app, bare = results["app"], results["bare"]
        print(
            f"\n{args.sockets} idle sockets on one process: app {app['kib_per_socket']} KiB each "
            f"(bare websockets server {bare['kib_per_socket']} KiB, "
            f"×{relay.ratio(app['kib_per_socket'], bare['kib_per_socket'])}); "
            f"target < 100 KiB: {'met' if app['kib_per_socket'] < 100 else 'MISSED'}; "
            f"{app['alive_after_idle']}/{app['opened']} alive after {args.idle_seconds:g} s idle, "
            f"idle CPU {app['idle_cpu_ms_per_s']} ms/s"
        )
        results["loadavg_after"] = os.getloadavg()
        print(f"load average before {results['machine']['loadavg']}, after {os.getloadavg()}")
    finally:
        for proc in procs:
            proc.stop()
        from django.db import connections

        connections.close_all()
        relay.recreate_database(server_url, BENCH_DB, drop_only=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    parser.add_argument("--idle-seconds", type=float, default=25.0)
    parser.add_argument("--layer", choices=("redis", "memory"), default="redis")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, relay._stop)
    signal.signal(signal.SIGTERM, relay._stop)
    signal.alarm(args.timeout)
    try:
        run(args)
    except relay.Stop as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
