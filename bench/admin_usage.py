"""The usage dashboard and the ledger's CSV export over 1,000,000 ApiCall rows in PostgreSQL.

    scripts/services.sh start && . .run/services/env && .venv/bin/python bench/admin_usage.py

Creates the database `claudeweb_bench` next to the one DATABASE_URL names (dropped first if it
exists, and dropped again at the end unless --keep), migrates it, loads the rows with COPY, then
times in this process, through Django's test Client:
  - the dashboard for the last 30 days (every row) and for today (median of several runs), against
    a bare `SELECT count(*), sum(...) ... WHERE created_at >= ...` over the same rows;
  - the CSV export of the whole ledger: rows per second and memory (RSS growth, and the Python
    heap's peak under tracemalloc in a second pass; then once more through the ASGI handler, as
    Daphne serves it), against psycopg's COPY (...) TO STDOUT of the same columns and order.
PostgreSQL is reached over its unix socket (or loopback); nothing else is contacted. The run is
bounded by --timeout seconds (SIGALRM), after which it stops and drops the database.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
BENCH_DB = "claudeweb_bench"
MODELS = [("claude-haiku-4-5", 0.5), ("claude-sonnet-4-6", 0.4), ("claude-opus-4-7", 0.1)]
ERRORS = ["upstream_overloaded", "upstream_rate_limited", "upstream_timeout", "upstream_error"]
COLUMNS = (
    "user_id",
    "purpose",
    "model",
    "request_id",
    "round",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "stop_reason",
    "ttft_ms",
    "duration_ms",
    "prices",
    "cost",
    "error_code",
    "created_at",
)


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout("the benchmark ran past --timeout and was stopped")


def libpq(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def recreate(server_url: str, *, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(libpq(with_database(server_url, "postgres")), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {BENCH_DB}")


def median_s(fn, runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def machine() -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {mem_gb:.1f} GiB RAM, {platform.platform()}"


def load(conn, rows: int, users: list[int], seed: int) -> float:
    """COPY `rows` calls spread evenly over the last 30 days (all inside the 30-day view)."""
    from chat.claude import catalogue
    from chat.ledger.usage import period_starts

    rng = random.Random(seed)
    prices = {m.id: m for m in catalogue.all_models()}
    snapshot = {model: json.dumps(info.prices()) for model, info in prices.items()}
    start = period_starts()[0] - timedelta(days=29)
    span_s = (datetime.now(start.tzinfo) - start).total_seconds()
    names = [name for name, _ in MODELS]
    weights = [weight for _, weight in MODELS]
    t0 = time.perf_counter()
    sql = f"COPY chat_apicall ({', '.join(COLUMNS)}) FROM STDIN"
    with conn.cursor() as cur, cur.copy(sql) as copy:
        for i in range(rows):
            model = rng.choices(names, weights)[0]
            info = prices[model]
            input_tokens = rng.randint(10, 4000)
            write_5m = rng.choice((0, 0, 0, rng.randint(500, 3000)))
            read = rng.choice((0, rng.randint(1000, 20000)))
            output = rng.randint(5, 2000)
            cost = (
                input_tokens * float(info.price_input)
                + write_5m * float(info.price_cache_write_5m)
                + read * float(info.price_cache_read)
                + output * float(info.price_output)
            ) / 1e6
            roll = rng.random()
            copy.write_row(
                (
                    users[i % len(users)],
                    "reply",
                    model,
                    f"req_bench_{i}",
                    0,
                    input_tokens,
                    write_5m,
                    0,
                    read,
                    output,
                    "max_tokens" if roll < 0.03 else "refusal" if roll < 0.035 else "end_turn",
                    rng.randint(200, 2000),
                    rng.randint(500, 30000),
                    snapshot[model],
                    f"{cost:.8f}",
                    ERRORS[i % len(ERRORS)] if 0.035 <= roll < 0.045 else "",
                    start + timedelta(seconds=span_s * i / rows),
                )
            )
    elapsed = time.perf_counter() - t0
    conn.execute("VACUUM ANALYZE")  # as autovacuum would have by then
    return elapsed


def export_pass(client, url: str, *, trace: bool) -> dict:
    """Stream the whole export; count rows and bytes; RSS growth (and heap peak if trace)."""
    rss_before = rss_bytes()
    rss_peak = rss_before
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200 and response.streaming
    size = lines = 0
    for index, chunk in enumerate(response.streaming_content):
        size += len(chunk)
        lines += chunk.count(b"\n")
        if index % 25 == 0:
            rss_peak = max(rss_peak, rss_bytes())
    response.close()
    elapsed = time.perf_counter() - t0
    heap_peak = tracemalloc.get_traced_memory()[1] if trace else None
    if trace:
        tracemalloc.stop()
    return {
        "rows": lines - 1,
        "bytes": size,
        "seconds": elapsed,
        "rss_growth": max(rss_peak, rss_bytes()) - rss_before,
        "heap_peak": heap_peak,
    }


def asgi_export_pass(user, url: str) -> dict:
    """The same export through Django's ASGI handler, as Daphne serves it (async iterator)."""
    import asyncio

    from django.test import AsyncClient

    async def go() -> dict:
        client = AsyncClient()
        await client.aforce_login(user)
        rss_before = rss_peak = rss_bytes()
        t0 = time.perf_counter()
        response = await client.get(url)
        assert response.status_code == 200 and response.is_async
        lines = index = 0
        async for chunk in response.streaming_content:
            lines += chunk.count(b"\n")
            index += 1
            if index % 25 == 0:
                rss_peak = max(rss_peak, rss_bytes())
        return {
            "rows": lines - 1,
            "seconds": time.perf_counter() - t0,
            "rss_growth": max(rss_peak, rss_bytes()) - rss_before,
        }

    return asyncio.run(go())


def copy_baseline(dsn: str) -> dict:
    """What PostgreSQL alone takes to produce the same CSV (same join, columns, order)."""
    import psycopg

    from chat.ledger.csv_export import EXPORT_COLUMNS

    columns = ", ".join(
        "u.username" if name == "username" else f"a.{name}" for name in EXPORT_COLUMNS
    )
    # Column names from EXPORT_COLUMNS, no input.
    select = f"SELECT {columns} FROM chat_apicall a LEFT JOIN auth_user u ON u.id = a.user_id"  # noqa: S608
    sql = (
        f"COPY ({select} ORDER BY a.created_at DESC, a.id DESC) TO STDOUT WITH (FORMAT csv, HEADER)"
    )
    size = lines = 0
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(sql) as copy:
        for block in copy:
            size += len(block)
            lines += bytes(block).count(b"\n")
    return {"rows": lines - 1, "bytes": size, "seconds": time.perf_counter() - t0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5, help="timed dashboard runs (median)")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds before giving up")
    parser.add_argument("--keep", action="store_true", help=f"keep the {BENCH_DB} database")
    args = parser.parse_args()

    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        print("DATABASE_URL must name PostgreSQL: scripts/services.sh start && . .run/services/env")
        return 2
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(args.timeout)
    bench_url = with_database(server_url, BENCH_DB)
    recreate(server_url)
    try:
        return run(args, bench_url)
    finally:
        signal.alarm(0)
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if not args.keep:
            recreate(server_url, drop_only=True)


def run(args, bench_url: str) -> int:
    env = dict(os.environ, DATABASE_URL=bench_url, DJANGO_SETTINGS_MODULE="claudeweb.settings")
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0", "--skip-checks"],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    os.environ.update(DATABASE_URL=bench_url, DJANGO_SETTINGS_MODULE="claudeweb.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import psycopg
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from chat.ledger.usage import period_starts
    from chat.models import ApiCall, UserBudget

    settings.DEBUG = False  # no query log: as in production
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]  # the test clients' host
    User = get_user_model()
    people = User.objects.bulk_create(User(username=f"bench-{i}") for i in range(args.users))
    # A tenth of the users have a daily token budget; the dashboard lists those near it.
    UserBudget.objects.bulk_create(
        UserBudget(user=user, daily_tokens=50_000) for user in people[: args.users // 10]
    )
    admin = User.objects.create_superuser("bench-admin", "admin@example.invalid", None)
    dsn = libpq(bench_url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        load_s = load(conn, args.rows, [u.pk for u in people], seed=42)
    print(f"machine: {machine()}")
    with psycopg.connect(dsn) as conn:
        print(f"database: {conn.execute('SELECT version()').fetchone()[0].split(',')[0]}")
    print(f"loaded {args.rows:,} rows with COPY in {load_s:.1f} s "
          f"(setup {time.perf_counter() - t0:.1f} s in all)")  # fmt: skip

    client = Client()
    client.force_login(admin)
    results = {}
    month_start = period_starts()[0] - timedelta(days=29)
    today = period_starts()[0]
    for label, query, since in (("30 days", "30d", month_start), ("today", "today", today)):
        url = f"/admin/usage/?period={query}"

        def dashboard(url=url):
            response = client.get(url)
            assert response.status_code == 200, response.status_code

        dashboard()  # warm up: caches, plans, templates
        view_s, view_runs = median_s(dashboard, args.runs)
        with psycopg.connect(dsn) as conn:

            def bare(since=since, conn=conn):
                conn.execute(
                    "SELECT count(*), sum(input_tokens), sum(cache_write_5m_tokens), "
                    "sum(cache_write_1h_tokens), sum(cache_read_tokens), sum(output_tokens), "
                    "sum(cost) FROM chat_apicall WHERE created_at >= %s",
                    [since],
                ).fetchone()

            bare()
            base_s, _ = median_s(bare, args.runs)
            rows = conn.execute(
                "SELECT count(*) FROM chat_apicall WHERE created_at >= %s", [since]
            ).fetchone()[0]
        results[label] = (view_s, base_s)
        print(
            f"dashboard, {label} ({rows:,} rows): median {view_s * 1000:.0f} ms over "
            f"{args.runs} runs ({', '.join(f'{t * 1000:.0f}' for t in view_runs)} ms); "
            f"bare aggregate {base_s * 1000:.0f} ms; ratio {view_s / base_s:.1f}x"
        )
    with CaptureQueriesContext(connection) as ctx:
        client.get("/admin/usage/?period=30d")
    print(f"dashboard, 30 days: {len(ctx.captured_queries)} queries:")
    for query in ctx.captured_queries:
        print(f"  {float(query['time']) * 1000:7.1f} ms  {query['sql'][:90]}")

    url = "/admin/chat/apicall/export/"
    plain = export_pass(client, url, trace=False)
    traced = export_pass(client, url, trace=True)
    over_asgi = asgi_export_pass(admin, url)
    base = copy_baseline(dsn)
    assert plain["rows"] == base["rows"] == ApiCall.objects.count()
    rate, base_rate = plain["rows"] / plain["seconds"], base["rows"] / base["seconds"]
    print(
        f"export, whole ledger ({plain['rows']:,} rows, {plain['bytes'] / 2**20:.0f} MiB): "
        f"{plain['seconds']:.1f} s, {rate:,.0f} rows/s; RSS growth "
        f"{plain['rss_growth'] / 2**20:.1f} MiB; Python heap peak (tracemalloc pass, "
        f"{traced['seconds']:.1f} s) {traced['heap_peak'] / 2**20:.1f} MiB"
    )
    print(
        f"export through the ASGI handler ({over_asgi['rows']:,} rows): "
        f"{over_asgi['seconds']:.1f} s, {over_asgi['rows'] / over_asgi['seconds']:,.0f} rows/s; "
        f"RSS growth {over_asgi['rss_growth'] / 2**20:.1f} MiB"
    )
    print(
        f"export baseline, COPY TO STDOUT of the same columns and order: {base['seconds']:.1f} s, "
        f"{base_rate:,.0f} rows/s; ratio {plain['seconds'] / base['seconds']:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
