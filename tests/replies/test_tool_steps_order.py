"""Tool steps in their place among the text: each `tool` frame says after which delta it came,
and the text before it has been sent by then (docs/protocol.md, `tool`)."""

from __future__ import annotations

import pytest

from tests.conftest import open_socket, send_and_wait

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("finish_replies"),
]

INTRO = "I'll use the `calculator` tool for that."


async def test_each_tool_frame_follows_the_text_before_it_and_names_its_delta(
    alice, titled_conversation
):
    async with open_socket(titled_conversation.pk, alice) as ws:
        frames = await send_and_wait(
            ws, "What is 6*7? [[offline call=calculator rounds=2 pace_ms=1]]", timeout=30
        )
    text, seen, places = "", 0, []
    for frame in frames:
        if frame["type"] == "delta":
            text += frame["text"]
            seen = frame["seq"]
        elif frame["type"] == "tool" and frame["result"] is None:
            # Every delta up to the step's seq came before it: nothing of its text is late.
            assert frame["seq"] == seen
            places.append(text)
    assert len(places) == 2
    assert places[0] == INTRO
    assert places[1] == f"{INTRO}\n\n{INTRO}"
    done = frames[-1]
    assert done["type"] == "done"
    kinds = [b["type"] for b in done["content"]]
    assert kinds == ["text", "tool_use", "tool_result", "text", "tool_use", "tool_result", "text"]
