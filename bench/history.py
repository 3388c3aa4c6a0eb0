"""Long histories: the chat page of a 5,000-message conversation and a list of 10,000 conversations.

    scripts/services.sh start && . .run/services/env
    .venv/bin/python bench/history.py               # --messages, --conversations, --runs, --keep

Creates the PostgreSQL database `claudeweb_bench_history` next to the one DATABASE_URL names
(dropped first, migrated with manage.py migrate, dropped at the end unless --keep) and loads,
with bulk_create:
  - alice: a conversation of 5,000 messages (a single branch, user and assistant in turn, about
    40 and 250 words, one ApiCall per reply) and one of 50 messages;
  - bob: 10,000 conversations of two messages each; carol: 100 of them.
Then, in this process, through Django's test Client logged in (DEBUG off), one warm-up and the
median of --runs runs, with the number of SQL queries of one more run (CaptureQueriesContext):
  - the chat page /c/<id>/ at 50 and 5,000 messages, and the JSON page of older messages
    (/c/<id>/messages/?before=…), against a bare SQL fetch of the same 50 rows;
  - planning a reply in the 5,000-message conversation (planning.plan_turn: what a send does in
    the database thread before the request goes out);
  - the conversation list / for 100 and 10,000 conversations, a deep page (?page=100), the last
    page, and a search (?q=…) over 10,000 conversations and their 20,000 messages.
The query counts must not grow with the history. Bounded by --timeout seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relay  # noqa: E402  (bench/relay.py: databases, machine)

ROOT = relay.ROOT
BENCH_DB = "claudeweb_bench_history"
VOCABULARY = (
    "the model streams tokens over a socket while the server saves checkpoints and the page "
    "renders markdown code blocks tables lists links with care for long conversations"
)
WORDS = VOCABULARY.split()


def prose(rng: random.Random, words: int) -> str:
    out, line = [], []
    for i in range(words):
        line.append(rng.choice(WORDS))
        if i % 14 == 13:
            out.append(" ".join(line) + ".")
            line = []
    out.append(" ".join(line))
    return "\n\n".join(" ".join(out[i : i + 4]) for i in range(0, len(out), 4)).strip()


def reply_text(rng: random.Random, words: int) -> str:
    return (
        "## Answer\n\n"
        + prose(rng, words)
        + "\n\n```python\ndef answer(x):\n    return x * 2\n```\n\n- one\n- two\n"
    )


def next_ids(count: int) -> list[int]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "SELECT nextval(pg_get_serial_sequence('chat_message', 'id')) "
            "FROM generate_series(1, %s)",
            [count],
        )
        return [row[0] for row in cur.fetchall()]


def chain(conversation, roles_texts: list[tuple[str, str]]) -> list:
    """Messages of one branch (each the parent of the next); the leaf is set."""
    from chat.models import Message

    ids = next_ids(len(roles_texts))
    rows = []
    for index, (pk, (role, text)) in enumerate(zip(ids, roles_texts, strict=True)):
        rows.append(
            Message(
                pk=pk,
                conversation=conversation,
                parent_id=ids[index - 1] if index else None,
                role=role,
                content=[{"type": "text", "text": text}],
                status=Message.Status.DONE,
                stop_reason="end_turn" if role == "assistant" else "",
                token_count=len(text) // 4,
            )
        )
    return rows


def load(args, rng: random.Random) -> dict:
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.utils import timezone

    from chat.claude import catalogue
    from chat.conversations import preferences
    from chat.models import ApiCall, Conversation, Message

    model = settings.CLAUDE_DEFAULT_MODEL
    prices = catalogue.get_model(model).prices()
    prompt = preferences.current_system_prompt()
    alice, bob, carol = (
        User.objects.create_user(name, password=None) for name in ("alice", "bob", "carol")
    )

    def turns(count: int) -> list[tuple[str, str]]:
        return [
            ("user", prose(rng, 40)) if i % 2 == 0 else ("assistant", reply_text(rng, 250))
            for i in range(count)
        ]

    out = {}
    for label, count in (("small", 50), ("big", args.messages)):
        conversation = Conversation.objects.create(
            owner=alice, model=model, system_prompt=prompt, title=f"{count} messages"
        )
        rows = chain(conversation, turns(count))
        Message.objects.bulk_create(rows, batch_size=1000)
        ApiCall.objects.bulk_create(
            [
                ApiCall(
                    user=alice,
                    conversation=conversation,
                    message_id=m.pk,
                    model=model,
                    input_tokens=1000,
                    output_tokens=m.token_count,
                    prices=prices,
                )
                for m in rows
                if m.role == "assistant"
            ],
            batch_size=1000,
        )
        Conversation.objects.filter(pk=conversation.pk).update(leaf_id=rows[-1].pk)
        out[label] = {"id": conversation.pk, "ids": [m.pk for m in rows]}

    now = timezone.now()
    for user, count in ((carol, 100), (bob, args.conversations)):
        conversations = Conversation.objects.bulk_create(
            [
                Conversation(
                    owner=user,
                    model=model,
                    system_prompt=prompt,
                    title=f"Conversation {i}: " + " ".join(rng.sample(WORDS, 3)),
                    updated_at=now - timedelta(minutes=i * 37),
                )
                for i in range(count)
            ],
            batch_size=1000,
        )
        messages = []
        for conversation in conversations:
            messages += chain(conversation, turns(2))
        Message.objects.bulk_create(messages, batch_size=2000)
        # Each conversation's leaf: its second message (ids come in pairs, in order).
        leaves = {m.conversation_id: m.pk for m in messages if m.role == "assistant"}
        Conversation.objects.bulk_update(
            [Conversation(pk=pk, leaf_id=leaf) for pk, leaf in leaves.items()],
            ["leaf_id"],
            batch_size=1000,
        )
        out[user.username] = {"count": count}
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")  # as autovacuum would have by then
    out["users"] = {"alice": alice, "bob": bob, "carol": carol}
    return out


def timed(fn, runs: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    with CaptureQueriesContext(connection) as queries:
        fn()
    size = len(result.content) if hasattr(result, "content") else None
    return {
        "ms": round(statistics.median(times) * 1000, 1),
        "ms_min": round(min(times) * 1000, 1),
        "ms_max": round(max(times) * 1000, 1),
        "queries": len(queries),
        "bytes": size,
    }


def measure(data: dict, runs: int) -> dict:
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from chat.replies import planning

    settings.DEBUG = False
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    users = data["users"]

    def page(user, url: str):
        client = Client()
        client.force_login(user)

        def get():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            return response

        return get

    def bare(conversation_id: int, sql: str):
        def fetch():
            with connection.cursor() as cur:
                cur.execute(sql, [conversation_id])
                return cur.fetchall()

        return fetch

    newest_50 = (
        "SELECT id, parent_id, role, content, status FROM chat_message "
        "WHERE conversation_id = %s ORDER BY id DESC LIMIT 50"
    )
    # What finding the active branch needs: the tree's shape, without the content.
    tree = "SELECT id, parent_id, role FROM chat_message WHERE conversation_id = %s ORDER BY id"
    every_row = "SELECT * FROM chat_message WHERE conversation_id = %s ORDER BY id"

    results: dict[str, dict] = {}
    small, big = data["small"], data["big"]
    checks = [
        ("chat page, 50 messages", page(users["alice"], f"/c/{small['id']}/")),
        (f"chat page, {len(big['ids']):,} messages", page(users["alice"], f"/c/{big['id']}/")),
        (
            f"older messages page (JSON), {len(big['ids']):,} messages",
            page(users["alice"], f"/c/{big['id']}/messages/?before={big['ids'][-50]}"),
        ),
        ("bare SQL: the newest 50 rows", bare(big["id"], newest_50)),
        (f"bare SQL: the tree (id, parent, role), {len(big['ids']):,}", bare(big["id"], tree)),
        (f"bare SQL: every column of {len(big['ids']):,} rows", bare(big["id"], every_row)),
        (
            f"plan a reply, {len(big['ids']):,} messages (planning.plan_turn)",
            lambda: planning.plan_turn(conversation_id=big["id"], reply_message_id=big["ids"][-1]),
        ),
        (
            "plan a reply, 50 messages (planning.plan_turn)",
            lambda: planning.plan_turn(
                conversation_id=small["id"], reply_message_id=small["ids"][-1]
            ),
        ),
        ("list, 100 conversations", page(users["carol"], "/")),
        (f"list, {data['bob']['count']:,} conversations", page(users["bob"], "/")),
        (f"list, {data['bob']['count']:,}: ?page=100", page(users["bob"], "/?page=100")),
        (f"list, {data['bob']['count']:,}: last page", page(users["bob"], "/?page=last")),
        (
            f"search, {data['bob']['count']:,} conversations",
            page(users["bob"], "/?q=checkpoints"),
        ),
    ]
    for label, fn in checks:
        try:
            results[label] = timed(fn, runs)
        except Exception as exc:  # noqa: BLE001 (reported: the app changes under the bench)
            results[label] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        row = results[label]
        if "error" in row:
            print(f"  {label:<58} ERROR {row['error']}", flush=True)
        else:
            size = f"{row['bytes'] / 1024:8.0f} KiB" if row["bytes"] else " " * 12
            print(
                f"  {label:<58} {row['ms']:8.1f} ms ({row['ms_min']}–{row['ms_max']})"
                f" {row['queries']:3d} queries {size}",
                flush=True,
            )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--conversations", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("DATABASE_URL must name PostgreSQL: . .run/services/env")
    signal.signal(signal.SIGALRM, relay._stop)
    signal.signal(signal.SIGTERM, relay._stop)
    signal.alarm(args.timeout)
    database_url = relay.recreate_database(server_url, BENCH_DB)
    try:
        env = dict(os.environ, DATABASE_URL=database_url, ANTHROPIC_API_KEY="unused-here")
        relay.migrate(env)
        relay.django_setup(database_url)
        print(f"machine: {relay.machine()}", flush=True)
        t0 = time.perf_counter()
        data = load(args, random.Random(42))
        print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)
        results = measure(data, args.runs)
        print(f"load average after: {os.getloadavg()}")
        if args.json:
            args.json.write_text(json.dumps({"machine": relay.machine(), "results": results}))
    except relay.Stop as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        if not args.keep:
            relay.recreate_database(server_url, BENCH_DB, drop_only=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
