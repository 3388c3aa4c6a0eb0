"""Long conversations: the context gauge and fitting from the API's own figures, count_tokens
only near the limit, server-side compaction where the model has it, the summary fold where it
has not — against the offline Claude."""

from __future__ import annotations

import json
import urllib.request
from decimal import Decimal

import anthropic
import pytest
from asgiref.sync import sync_to_async

from chat.claude import context, records, request_body
from chat.conversations import lifecycle
from chat.ledger import entries
from chat.models import ApiCall, Conversation, Message
from chat.replies import meters, planning
from tests.conftest import open_socket, send_and_wait

PRICES = {
    "price_input": "4.00",
    "price_cache_write_5m": "5.00",
    "price_cache_write_1h": "8.00",
    "price_cache_read": "0.20",
    "price_output": "20.00",
    "price_web_search_per_1k": "10.00",
}
# A served id that takes compaction, with a window small enough for a test: the API's
# smallest trigger (50,000 tokens) lies well under its fold limit (75 % of 200,000).
COMPACTING = {
    "id": "claude-opus-5-5",
    "label": "Compacting test model",
    "context_window": 200_000,
    "max_output": 128_000,
    "thinking": "always",
    "compaction": True,
    **PRICES,
}
# A served id without compaction and a window small enough to fold.
TINY = {
    "id": "claude-haiku-4-5",
    "label": "Tiny test model",
    "context_window": 4000,
    "max_output": 400,
    "compaction": False,
    **PRICES,
}
TRIGGER = 50_000


@pytest.fixture
def test_catalogue(settings, tmp_path):
    catalogue_file = tmp_path / "models.json"
    catalogue_file.write_text(json.dumps({"models": [COMPACTING, TINY]}))
    settings.CLAUDE_MODEL_CATALOGUE = catalogue_file
    settings.CLAUDE_FAST_MODEL = TINY["id"]
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 300
    settings.CLAUDE_COMPACTION_TRIGGER_TOKENS = TRIGGER
    return settings


def filler(words: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(words))


@sync_to_async
def seeded(user, model: str, *, turns: int, words: int) -> Conversation:
    """A titled conversation with `turns` exchanges of about `words` words a message."""
    conversation = lifecycle.conversation_create(owner=user, model=model)
    conversation.title = "Long"
    conversation.token_budget = 10_000_000
    conversation.save()
    parent = None
    for i in range(turns):
        for role in ("user", "assistant"):
            parent = Message.objects.create(
                conversation=conversation,
                parent=parent,
                role=role,
                content=[{"type": "text", "text": filler(words, f"{role[0]}{i}w")}],
            )
    conversation.leaf = parent
    conversation.save(update_fields=["leaf"])
    return conversation


def recorded(offline_claude_url: str, path: str) -> list[dict]:
    with urllib.request.urlopen(offline_claude_url + "/_offline/requests", timeout=5) as r:
        return [rec for rec in json.load(r) if rec["path"] == path]


def count_requests(offline_claude_url: str) -> list[dict]:
    return recorded(offline_claude_url, "/v1/messages/count_tokens")


@sync_to_async
def reply_calls(conversation: Conversation) -> list[ApiCall]:
    return list(
        ApiCall.objects.filter(
            conversation=conversation, purpose__in=entries.REPLY_PURPOSES
        ).order_by("id")
    )


def without_cache_marks(value):
    if isinstance(value, dict):
        return {k: without_cache_marks(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [without_cache_marks(v) for v in value]
    return value


def whole_input(call: ApiCall) -> int:
    return (
        call.input_tokens
        + call.cache_write_5m_tokens
        + call.cache_write_1h_tokens
        + call.cache_read_tokens
    )


# --- the gauge and the fit from the API's own figures --------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_the_gauge_after_a_few_turns_is_the_last_calls_real_figures(
    alice, titled_conversation, offline_requests, offline_claude_url
):
    async with open_socket(titled_conversation.pk, alice) as ws:
        for n in range(3):
            frames = await send_and_wait(
                ws, f"Question {n}: tell me more. [[offline words=8]]", timeout=60
            )
            assert frames[-1]["type"] == "done"
    last = (await reply_calls(titled_conversation))[-1]
    shown = frames[-1]["meters"]
    assert shown["context_tokens"] == whole_input(last) + last.output_tokens

    @sync_to_async
    def estimated() -> int:
        conversation = Conversation.objects.select_related("system_prompt").get(
            pk=titled_conversation.pk
        )
        messages = Message.objects.filter(conversation=conversation)
        return (
            len(conversation.system_prompt.text) // 4
            + 1
            + sum(context.estimate_tokens(m.content) for m in messages)
        )

    # Four characters a token over the whole history leaves out what the API counts besides
    # the text (the tool definitions): the gauge shows the API's figure, not that guess.
    assert shown["context_tokens"] != await estimated()
    assert len(offline_requests.all()) == 3
    assert count_requests(offline_claude_url) == []


@pytest.mark.django_db
def test_a_message_after_the_last_call_adds_only_its_own_estimate(alice, titled_conversation):
    conversation = titled_conversation
    question = Message.objects.create(
        conversation=conversation, role="user", content=[{"type": "text", "text": "hi"}]
    )
    answer = Message.objects.create(
        conversation=conversation,
        parent=question,
        role="assistant",
        content=[{"type": "text", "text": "hello"}],
        token_count=2,
    )
    ApiCall.objects.create(
        user=alice,
        conversation=conversation,
        message=answer,
        model=conversation.model,
        input_tokens=40,
        cache_write_5m_tokens=1200,
        cache_read_tokens=3000,
        output_tokens=2,
    )
    follow_up = [{"type": "text", "text": "x" * 400}]
    pending = Message.objects.create(
        conversation=conversation, parent=answer, role="user", content=follow_up
    )
    conversation.leaf = pending
    conversation.save()
    assert meters.context_in_use(conversation) == 40 + 1200 + 3000 + 2 + 101
    # The request the next reply makes is sized the same way.
    reply = Message.objects.create(
        conversation=conversation, parent=pending, role="assistant", status="streaming"
    )
    plan = planning.plan_turn(conversation_id=conversation.pk, reply_message_id=reply.pk)
    assert plan.estimate == 4242 + 101 and not plan.near_limit


# --- count_tokens only near the limit -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_count_tokens_is_not_asked_on_a_short_chat(
    alice, titled_conversation, offline_requests, offline_claude_url
):
    async with open_socket(titled_conversation.pk, alice) as ws:
        for n in range(3):
            assert (await send_and_wait(ws, f"Turn {n} [[offline words=5]]", timeout=60))[-1][
                "type"
            ] == "done"
    assert len(offline_requests.all()) == 3
    assert count_requests(offline_claude_url) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_count_tokens_is_asked_once_near_the_limit_and_nothing_is_folded_below_it(
    alice, test_catalogue, offline_requests, offline_claude_url
):
    # Four exchanges of ~330 tokens: an estimate of about 2,600 with the system prompt, within
    # 15 % under the fold limit of min(75 % of 4,000, 4,000 − 300) = 3,000; about 2,830 when
    # counted (the tool definitions too): still under it.
    conversation = await seeded(alice, TINY["id"], turns=4, words=200)
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "and now? [[offline words=5]]", timeout=60)
    assert frames[-1]["type"] == "done"
    [counted] = count_requests(offline_claude_url)
    [reply] = offline_requests.all()
    assert counted["time"] <= reply["time"]
    # The real endpoint's request: the request's own fields, none of a message's.
    assert set(counted["body"]) <= {"model", "system", "messages", "tools", "thinking"}
    assert counted["body"]["messages"] == without_cache_marks(reply["body"]["messages"])
    assert offline_requests.side() == []  # nothing was summarised
    assert (await reply_calls(conversation))[-1].purpose == "reply"


# --- server-side compaction -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_conversation_past_the_trigger_is_compacted_and_the_next_request_reads_less(
    alice, test_catalogue, offline_requests, offline_claude_url
):
    # Six exchanges of ~10,000 tokens: past the 50,000-token trigger, far under the fold limit.
    conversation = await seeded(alice, COMPACTING["id"], turns=6, words=5000)
    async with open_socket(conversation.pk, alice) as ws:
        first = await send_and_wait(ws, "Where were we? [[offline words=6]]", timeout=60)
        assert first[-1]["type"] == "done", first[-1]
        request = offline_requests.all()[-1]
        assert "compact-2026-01-12" in request["headers"]["anthropic-beta"]
        assert request["body"]["context_management"] == {
            "edits": [
                {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": TRIGGER}}
            ]
        }
        reply = await sync_to_async(Message.objects.get)(pk=first[-1]["message_id"])
        block = reply.content[0]
        assert block["type"] == "compaction"
        assert "u0w0" in block["content"] and "Where were we?" in block["content"]
        assert reply.text.startswith("lorem")  # the summary is not part of the reply's text
        [compacting] = await reply_calls(conversation)
        part = compacting.prices["compaction"]
        assert part["input_tokens"] + part["cache_write_5m_tokens"] >= TRIGGER
        prompt, output = entries.reply_usage(compacting)
        assert prompt < 1000  # the reply read the summary and the question, not the history
        # The gauge follows the API's top-level figures: the compacted context.
        assert first[-1]["meters"]["context_tokens"] == prompt + output

        second = await send_and_wait(ws, "And then? [[offline words=4]]", timeout=60)
        assert second[-1]["type"] == "done"
    sent = offline_requests.all()[-1]["body"]["messages"]
    assert block in [b for m in sent if m["role"] == "assistant" for b in m["content"]]
    after = (await reply_calls(conversation))[-1]
    assert whole_input(after) < prompt + output + 200  # from the block on, not the history
    assert count_requests(offline_claude_url) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_the_cost_of_a_compacting_call_is_both_iterations_at_the_models_prices(
    alice, test_catalogue, offline_requests
):
    conversation = await seeded(alice, COMPACTING["id"], turns=6, words=5000)
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "Sum it up. [[offline words=6]]", timeout=60)
    assert frames[-1]["type"] == "done"
    [call] = await reply_calls(conversation)
    part = call.prices["compaction"]
    # The row holds every billed token: the reply's own and its compaction's.
    assert call.input_tokens >= part["input_tokens"] and part["output_tokens"] > 0
    by_hand = (
        call.input_tokens * Decimal("4.00")
        + call.cache_write_5m_tokens * Decimal("5.00")
        + call.cache_write_1h_tokens * Decimal("8.00")
        + call.cache_read_tokens * Decimal("0.20")
        + call.output_tokens * Decimal("20.00")
    ) / Decimal(1_000_000)
    assert call.cost == by_hand
    assert Decimal(frames[-1]["cost"]) == by_hand


@pytest.mark.django_db
def test_each_iteration_is_priced_at_the_tier_its_own_prompt_falls_in(alice):
    # Haiku 5.5: $0.10 / $0.50 (read $0.01) up to 100,000 input tokens, $0.50 / $2.50 above.
    record = records.CallRecord(model="claude-haiku-5-5")
    record.usage = records.Usage(input_tokens=2000, cache_read_tokens=1000, output_tokens=500)
    record.compaction = records.Usage(input_tokens=120_000, output_tokens=3000)
    entries.record_calls(calls=[record], user_id=alice.pk, conversation_id=None, message_id=None)
    row = ApiCall.objects.get()
    reply_part = 2000 * Decimal("0.10") + 1000 * Decimal("0.01") + 500 * Decimal("0.50")
    compaction_part = 120_000 * Decimal("0.50") + 3000 * Decimal("2.50")
    assert row.cost == (reply_part + compaction_part) / Decimal(1_000_000)
    assert (row.input_tokens, row.cache_read_tokens, row.output_tokens) == (122_000, 1000, 3500)
    assert entries.reply_usage(row) == (3000, 500)


# --- models without compaction --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_model_without_compaction_still_folds_by_summary(
    alice, test_catalogue, offline_requests
):
    conversation = await seeded(alice, TINY["id"], turns=8, words=200)
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(ws, "and now? [[offline words=5]]", timeout=60)
    assert frames[-1]["type"] == "done"
    await sync_to_async(conversation.refresh_from_db)()
    assert conversation.summary and conversation.summary_upto_id
    assert len(offline_requests.side()) == 1  # the fast model's summary
    request = offline_requests.all()[-1]
    assert "context_management" not in request["body"]
    assert "compact-2026-01-12" not in request["headers"].get("anthropic-beta", "")
    first = request["body"]["messages"][0]["content"][0]["text"]
    assert first.startswith(request_body.SUMMARY_PREFIX)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_reply_planned_again_after_its_fold_keeps_the_web_search_it_was_given(
    alice, test_catalogue, offline_requests, settings
):
    settings.CLAUDE_WEB_SEARCH = True
    conversation = await seeded(alice, TINY["id"], turns=8, words=200)
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(
            ws, "and now? [[offline words=5]]", timeout=60, web_search=True
        )
    assert frames[-1]["type"] == "done"
    assert len(offline_requests.side()) == 1  # folded: the reply was planned again
    tools = offline_requests.all()[-1]["body"]["tools"]
    assert [t["type"] for t in tools if t.get("name") == "web_search"] == ["web_search_20250305"]


def test_a_compaction_block_reaches_a_model_without_compaction_as_a_summary():
    def turn(id, role, *content):
        return context.StoredTurn(id=id, role=role, content=list(content))

    summary = {"type": "compaction", "content": "They spoke of boats."}
    turns = [
        turn(1, "user", {"type": "text", "text": "old"}),
        turn(2, "assistant", summary, {"type": "text", "text": "Boats, yes."}),
        turn(3, "user", {"type": "text", "text": "new"}),
    ]
    text, rest = context.without_compaction(turns)
    assert text == "They spoke of boats."
    assert [(t.id, t.content) for t in rest] == [
        (2, [{"type": "text", "text": "Boats, yes."}]),
        (3, [{"type": "text", "text": "new"}]),
    ]
    # A model with compaction reads the same turns from the block on.
    assert [t.content for t in context.since_compaction(turns)][0][0] == summary


# --- the offline Claude, as the compaction pages document the API ----------------------------


def client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="test", max_retries=0)


EDIT = {
    "edits": [{"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": TRIGGER}}]
}
BETA = ["compact-2026-01-12"]


def long_messages() -> list[dict]:
    return [
        {"role": "user", "content": "first " + filler(40_000, "a")},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "second [[offline words=3]]"},
    ]


def test_the_offline_model_refuses_compaction_without_the_beta_or_on_a_model_without_it(
    offline_claude_url,
):
    api = client(offline_claude_url)
    ask = {"max_tokens": 20, "messages": long_messages(), "context_management": EDIT}
    with pytest.raises(anthropic.BadRequestError, match="not supported"):
        api.beta.messages.create(model="claude-haiku-4-5", betas=BETA, **ask)
    with pytest.raises(anthropic.BadRequestError, match="compact-2026-01-12"):
        api.beta.messages.create(model="claude-opus-5-5", **ask)
    low = {
        "edits": [{"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 1000}}]
    }
    with pytest.raises(anthropic.BadRequestError, match="greater than or equal to 50000"):
        api.beta.messages.create(
            model="claude-opus-5-5", betas=BETA, **{**ask, "context_management": low}
        )


def test_the_offline_model_streams_a_compaction_block_and_reports_its_iteration(
    offline_claude_url,
):
    api = client(offline_claude_url)
    events = list(
        api.beta.messages.create(
            model="claude-opus-5-5",
            max_tokens=50,
            messages=long_messages(),
            betas=BETA,
            context_management=EDIT,
            stream=True,
        )
    )
    starts = [e.content_block for e in events if e.type == "content_block_start"]
    assert [b.type for b in starts][0] == "compaction" and starts[0].content is None
    summaries = [
        e.delta
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "compaction_delta"
    ]
    assert len(summaries) == 1 and "second" in summaries[0].content
    [final] = [e.usage for e in events if e.type == "message_delta"]
    kinds = [i.type for i in final.iterations]
    assert kinds == ["compaction", "message"]
    whole = final.iterations[0].input_tokens
    assert whole >= TRIGGER and final.input_tokens == final.iterations[1].input_tokens < 200


def test_the_offline_model_counts_from_the_newest_compaction_block(offline_claude_url):
    api = client(offline_claude_url)
    before = long_messages()
    after = [
        *before,
        {"role": "assistant", "content": [{"type": "compaction", "content": "A summary."}]},
        {"role": "user", "content": "third"},
    ]
    full = api.beta.messages.count_tokens(model="claude-opus-5-5", messages=before, betas=BETA)
    cut = api.beta.messages.count_tokens(model="claude-opus-5-5", messages=after, betas=BETA)
    assert full.input_tokens > TRIGGER and cut.input_tokens == 3 + 2  # "A summary." + "third"
    with pytest.raises(anthropic.BadRequestError, match="compaction blocks require"):
        api.messages.count_tokens(model="claude-opus-5-5", messages=after)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("finish_replies")
async def test_a_compacting_reply_goes_through_a_tool_round_with_its_thinking_intact(
    alice, test_catalogue, offline_requests
):
    conversation = await seeded(alice, COMPACTING["id"], turns=6, words=5000)
    async with open_socket(conversation.pk, alice) as ws:
        frames = await send_and_wait(
            ws, "Compute 6*7 please. [[offline call=calculator]]", timeout=60
        )
    assert frames[-1]["type"] == "done" and frames[-1]["stop_reason"] == "end_turn"
    reply = await sync_to_async(Message.objects.get)(pk=frames[-1]["message_id"])
    kinds = [b["type"] for b in reply.content]
    assert kinds[:3] == ["compaction", "thinking", "text"] and "tool_result" in kinds
    # The tool round sent the compacting turn back as it came: block, thinking, call.
    round_two = offline_requests.all()[-1]["body"]["messages"][-2]["content"]
    assert [b["type"] for b in round_two][:2] == ["compaction", "thinking"]
    calls = await reply_calls(conversation)
    assert [c.purpose for c in calls] == ["reply", "tool_round"]
    assert "compaction" in calls[0].prices and "compaction" not in calls[1].prices


def test_the_catalogue_and_the_offline_lineup_agree_on_compaction():
    from chat.claude import catalogue
    from offline_claude import lineup

    served = lineup.models()
    assert {m.id: m.compaction for m in catalogue.all_models()} == {
        m.id: served[m.id].compaction for m in catalogue.all_models()
    }


def test_a_compaction_trigger_under_the_apis_minimum_fails_a_system_check(settings):
    from chat.checks import check_claude_settings

    settings.CLAUDE_COMPACTION_TRIGGER_TOKENS = 49_999
    assert "claudeweb.E012" in [e.id for e in check_claude_settings()]
    settings.CLAUDE_COMPACTION_TRIGGER_TOKENS = 50_000
    assert "claudeweb.E012" not in [e.id for e in check_claude_settings()]
