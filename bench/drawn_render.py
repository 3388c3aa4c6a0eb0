"""Server cost of drawing a chat page's messages (chat/views/drawn.py): cold, cached, baseline.

    .venv/bin/python bench/drawn_render.py               # 50 messages, 100 KB of text
    .venv/bin/python bench/drawn_render.py --messages 50 --repeat 5

One page of messages like a long conversation's: user questions, and replies of Markdown (the
Lighthouse bench's reply four times: a heading, a list, a table, a code block), every fifth with
a 9 KB Python block. Timed, each
the median of --repeat runs, in one process:
  - cold: page_messages with the cache empty (every reply rendered: markdown-it, Pygments, nh3);
  - cached: page_messages again (every reply's HTML read from the cache);
  - baseline: what the page carried for its messages before it drew them, the messages as JSON
    (`json_script`, which every chat page still does).
No database and no server: the view's own function, on Django's default cache (local memory).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "claudeweb.settings")

import django  # noqa: E402

django.setup()

from django.core.cache import cache  # noqa: E402
from django.utils.html import json_script  # noqa: E402

from bench.lighthouse import REPLY as LIGHTHOUSE_REPLY  # noqa: E402
from chat.views import drawn  # noqa: E402

# The Lighthouse bench's reply, without its line for the offline model.
REPLY = LIGHTHOUSE_REPLY.split("\n", 1)[1]


def page(n: int) -> list[dict]:
    code = "```python\n" + (ROOT / "chat" / "views" / "markdown.py").read_text().replace("$", "")
    messages = []
    for i in range(n // 2):
        text = REPLY * 4 + (code + "\n```\n" if i % 5 == 0 else "") + f"\n\nReply {i}."
        messages.append(
            {"id": 2 * i, "role": "user", "text": f"Question {i}: " + "why? " * 40,
             "content": [{"type": "text", "text": "…"}], "status": "done", "stop_reason": ""}
        )  # fmt: skip
        messages.append(
            {"id": 2 * i + 1, "role": "assistant", "text": text,
             "content": [{"type": "text", "text": "…"}], "status": "done",
             "stop_reason": "end_turn"}
        )  # fmt: skip
    return messages


def timed(fn, repeat: int, before=None) -> float:
    runs = []
    for _ in range(repeat):
        if before:
            before()
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    messages = page(args.messages)
    size = sum(len(m["text"]) for m in messages)
    cache.clear()
    assert drawn.page_messages(messages) is not None  # warm-up: imports, lexers
    cold = timed(lambda: drawn.page_messages(messages), args.repeat, before=cache.clear)
    cached = timed(lambda: drawn.page_messages(messages), args.repeat)
    baseline = timed(lambda: json_script(messages, "chat-config"), args.repeat)
    print(f"{len(messages)} messages, {size / 1024:.0f} KB of text, median of {args.repeat}:")
    print(f"  drawn, cold cache   {cold:8.1f} ms")
    print(f"  drawn, cached       {cached:8.1f} ms")
    print(f"  baseline: as JSON   {baseline:8.1f} ms")
    print(json.dumps({"cold_ms": cold, "cached_ms": cached, "baseline_ms": baseline}))


if __name__ == "__main__":
    main()
