"""A live check of the configured Claude API: one small request per capability the app relies on.

Every request goes through the app's own code (chat.claude's client and error mapping,
chat.claude.request_body's request builder, the calculator of chat.replies.tools), so a
capability that passes here works in replies too. Used by `manage.py claude_live_check`;
never run by the tests against anything but the offline model, nor in CI.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

from django.conf import settings

from chat.claude import catalogue, client, context, errors, records, request_body
from chat.claude.served import compare
from chat.ledger import entries
from chat.replies import tools

ANTHROPIC_API = "https://api.anthropic.com"
SYSTEM = "You are checking that an API key works. Answer briefly."
REPLY_PROMPT = "Say hello in five words."
TOOL_PROMPT = "Use the calculator tool to compute 1234 * 5678, then give the result."
CUT_PROMPT = "Count from 1 to 40 in digits, separated by commas."
TOOL_EFFORT = "low"
# Small limits keep the whole check cheap (worst_case_cost); large enough that a model that
# thinks before it answers still gets to the text.
REPLY_MAX_TOKENS = 128
TOOL_ROUND_MAX_TOKENS = 1024
TOOL_ROUNDS_MAX = 3
CUT_MAX_TOKENS = 24
CONTINUE_MAX_TOKENS = 160
# The API adds a system prompt of its own when tools are offered (a few hundred tokens).
TOOL_USE_OVERHEAD_TOKENS = 500
# The app's estimate is about 4 characters a token; a tokenizer may count more.
ESTIMATE_MARGIN = 2
# The calculator reads no user data; the check runs for no user of the app.
NO_USER = tools.ToolContext(user_id=0, conversation_id=0)


class CheckFailed(Exception):
    """The request worked but did not show the capability (e.g. no tool was asked for)."""


@dataclass
class Outcome:
    """One capability's result: the figures of its requests, and what went wrong if it did."""

    capability: str
    model: str
    ok: bool = False
    calls: list[records.CallRecord] = field(default_factory=list)
    counted_tokens: int = 0  # count_tokens: the tokens counted (the request costs nothing)
    seconds: float = 0.0
    detail: str = ""
    error: str = ""

    @property
    def input_tokens(self) -> int:
        usage = self.usage
        return usage.input_tokens + usage.cache_creation_tokens + usage.cache_read_tokens

    @property
    def usage(self) -> records.Usage:
        total = records.Usage(input_tokens=self.counted_tokens)
        for call in self.calls:
            total.add(call.usage)
        return total

    @property
    def cost(self) -> Decimal:
        """At the catalogue's prices, as the ledger would record these calls."""
        return entries.cost_of_calls(self.calls)


def describe_target(base_url: str) -> tuple[bool, str]:
    """Whether requests go to Anthropic's API, and a sentence saying where they go."""
    url = (base_url or ANTHROPIC_API).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname == "api.anthropic.com":
        return True, f"Requests go to Anthropic's API ({url})."
    return False, (
        f"ANTHROPIC_BASE_URL is {url}, not Anthropic's API: the replies, tokens and costs "
        "below are that server's, not Claude's."
    )


def default_model() -> catalogue.ModelInfo:
    """The cheapest current catalogue model with adaptive thinking (output, then input price)."""
    thinking = [
        m
        for m in catalogue.all_models()
        if m.status == "current" and m.thinking in request_body.ADAPTIVE_SUPPORT
    ]
    if not thinking:
        raise catalogue.UnknownModel("no current model with adaptive thinking")
    return min(thinking, key=lambda m: (m.price_output, m.price_input))


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def _calculator_only() -> tools.Registry:
    registry = tools.Registry()
    registry.register(tools.REGISTRY.tools["calculator"])
    return registry


def worst_case_cost(model: catalogue.ModelInfo) -> Decimal:
    """What the check costs at most: every request writing its whole max_tokens, every input
    token at the dearest input rate (a 5-minute cache write), the earlier rounds' output sent
    back as input, twice the app's estimate of the prompts plus the API's tool-use prompt."""
    system = context.estimate_tokens(client.system_blocks(SYSTEM))
    calculator = TOOL_USE_OVERHEAD_TOKENS + ESTIMATE_MARGIN * context.estimate_block_tokens(
        {"type": "tool", **_tool_definitions()[0]}
    )

    def prompt(text: str) -> int:
        return ESTIMATE_MARGIN * (system + context.estimate_tokens(_user(text)[0]["content"]))

    requests = [(prompt(REPLY_PROMPT), REPLY_MAX_TOKENS)]
    sent_back = 0
    for _ in range(TOOL_ROUNDS_MAX):
        requests.append((prompt(TOOL_PROMPT) + calculator + sent_back, TOOL_ROUND_MAX_TOKENS))
        sent_back += TOOL_ROUND_MAX_TOKENS + 100  # its output and the tool's result
    requests.append((prompt(CUT_PROMPT), CUT_MAX_TOKENS))
    requests.append((prompt(CUT_PROMPT) + CUT_MAX_TOKENS + 30, CONTINUE_MAX_TOKENS))
    prices = model.prices()
    dearest_input = max(Decimal(prices["input"]), Decimal(prices["cache_write_5m"]))
    total = sum(
        tokens * dearest_input + out * Decimal(prices["output"]) for tokens, out in requests
    )
    return total / catalogue.MTOK


def _tool_definitions() -> list[dict]:
    return _calculator_only().definitions()


async def _stream(
    outcome: Outcome,
    *,
    messages: list[dict],
    max_tokens: int,
    purpose: str,
    tool_list: list[dict] | None = None,
    thinking: dict | None = None,
    on_thinking: Callable[[str], None] | None = None,
) -> tuple[records.CallRecord, str]:
    """One streamed request through client.stream_round; its record and its text."""
    record = records.CallRecord(model=outcome.model, purpose=purpose, round=len(outcome.calls))
    outcome.calls.append(record)
    pieces = []
    async for text in client.stream_round(
        model=outcome.model,
        system=client.system_blocks(SYSTEM),
        messages=messages,
        max_tokens=max_tokens,
        record=record,
        tools=tool_list,
        thinking=thinking,
        on_thinking=on_thinking,
    ):
        pieces.append(text)
    return record, "".join(pieces)


def _short(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


async def check_reply(outcome: Outcome) -> None:
    """A streamed reply: text arrives as deltas and the stream ends with a stop reason."""
    record, text = await _stream(
        outcome, messages=_user(REPLY_PROMPT), max_tokens=REPLY_MAX_TOKENS, purpose="reply"
    )
    if not text or not record.stop_reason:
        raise CheckFailed(f"no text streamed (stop_reason {record.stop_reason or 'none'})")
    outcome.detail = f"{record.stop_reason}, first text after {record.ttft_ms} ms: {_short(text)!r}"


async def check_tool_loop(outcome: Outcome, info: catalogue.ModelInfo) -> None:
    """Adaptive thinking at low effort and the calculator: the model asks for the tool, its
    result goes back after the round's blocks (thinking first, unmodified), the model answers."""
    registry = _calculator_only()
    thinking = request_body.thinking_params(support=info.thinking, effort=TOOL_EFFORT)
    history = _user(TOOL_PROMPT)
    blocks: list[dict] = []
    thought: list[str] = []
    ran: list[str] = []
    for index in range(TOOL_ROUNDS_MAX):
        messages = request_body.round_messages(history, blocks)
        record, text = await _stream(
            outcome,
            messages=messages,
            max_tokens=TOOL_ROUND_MAX_TOKENS,
            purpose="reply" if index == 0 else "tool_round",
            tool_list=registry.definitions(),
            thinking=thinking,
            on_thinking=thought.append,
        )
        blocks += record.content
        uses = [b for b in record.content if b.get("type") == "tool_use"]
        if record.stop_reason != "tool_use" or not uses:
            break
        for use in uses:
            tool_input = use.get("input", {})
            result = registry.run(use["name"], tool_input, NO_USER)
            ran.append(f"{use['name']}({tool_input.get('expression', '')}) = {result.content}")
            blocks.append(result.block(use["id"]))
    if not ran:
        raise CheckFailed(f"the model did not ask for the calculator ({record.stop_reason})")
    if record.stop_reason == "tool_use":
        raise CheckFailed(f"still asking for tools after {TOOL_ROUNDS_MAX} rounds")
    if not text:
        raise CheckFailed(f"no answer after the tool result ({record.stop_reason})")
    sent_back = [
        b
        for m in messages
        if m["role"] == "assistant"
        for b in m["content"]
        if b.get("type") in request_body.THINKING_TYPES
    ]
    if not thinking:
        said = "thinking not asked (the model has no adaptive thinking)"
    elif sent_back:
        said = f"{len(sent_back)} thinking block(s) sent back" + (
            f", {len(''.join(thought))} chars of thinking shown" if thought else ""
        )
    else:
        said = "the model wrote no thinking block (adaptive: its choice)"
    outcome.detail = f"{'; '.join(ran)}; {said}; answer {_short(text, 30)!r}"


async def check_continue(outcome: Outcome) -> None:
    """A reply cut by a tiny max_tokens, then continued as the app's Continue does: the cut
    reply as a complete assistant turn, then the short user turn asking to go on."""
    history = _user(CUT_PROMPT)
    cut, cut_text = await _stream(
        outcome, messages=history, max_tokens=CUT_MAX_TOKENS, purpose="reply"
    )
    if cut.stop_reason != "max_tokens":
        raise CheckFailed(f"the reply was not cut ({cut.stop_reason}): nothing to continue")
    blocks = [*cut.content, request_body.continuation_block()]
    more, more_text = await _stream(
        outcome,
        messages=request_body.round_messages(history, blocks),
        max_tokens=CONTINUE_MAX_TOKENS,
        purpose="continuation",
    )
    if not more_text:
        raise CheckFailed(f"the continuation wrote no text ({more.stop_reason})")
    outcome.detail = (
        f"cut at {len(cut_text)} chars, continued with {len(more_text)} ({more.stop_reason}): "
        f"{_short(cut_text, 20)!r} + {_short(more_text, 20)!r}"
    )


async def check_count_tokens(outcome: Outcome) -> None:
    """count_tokens of the tool loop's first request (system, the prompt, the calculator)."""
    outcome.counted_tokens = await client.count_tokens(
        model=outcome.model,
        system=client.system_blocks(SYSTEM),
        messages=_user(TOOL_PROMPT),
        tools=_tool_definitions(),
    )
    if outcome.counted_tokens < 1:
        raise CheckFailed(f"counted {outcome.counted_tokens} tokens")
    outcome.detail = f"{outcome.counted_tokens} input tokens (the tool loop's first request)"


async def check_models(outcome: Outcome) -> None:
    """GET /v1/models against the catalogue, as `manage.py check_models` compares them."""
    served = await client.list_models()
    rows = compare(catalogue.all_models(), served)
    if outcome.model not in {s.id for s in served}:
        raise CheckFailed(f"{outcome.model} is not among the {len(served)} models served")
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "missing", "mismatch")}
    extra = sum(r.status == "not in catalogue" for r in rows)
    outcome.detail = (
        f"{len(served)} served; catalogue {counts['ok']} ok, {counts['missing']} missing, "
        f"{counts['mismatch']} mismatch; {extra} not in catalogue"
    )
    if counts["missing"] or counts["mismatch"]:
        outcome.detail += " (manage.py check_models lists them)"


def _error_text(error: errors.ClaudeError) -> str:
    status = f" (HTTP {error.status})" if error.status else ""
    request = f" [{error.request_id}]" if error.request_id else ""
    return f"{error.code}{status}: {error.message}{request}"


async def _run_one(
    capability: str, model: str, check: Callable[[Outcome], Awaitable[None]]
) -> Outcome:
    outcome = Outcome(capability=capability, model=model)
    started = time.monotonic()
    try:
        await check(outcome)
        outcome.ok = True
    except errors.ClaudeError as exc:
        outcome.error = _error_text(exc)
    except CheckFailed as exc:
        outcome.error = f"check_failed: {exc}"
    outcome.seconds = time.monotonic() - started
    return outcome


CAPABILITIES = ("streamed reply", "tool loop + thinking", "continue", "count_tokens", "models")


async def run(model: catalogue.ModelInfo) -> list[Outcome]:
    """Every capability, one after the other; a failure does not stop the others."""
    checks = {
        "streamed reply": check_reply,
        "tool loop + thinking": lambda outcome: check_tool_loop(outcome, model),
        "continue": check_continue,
        "count_tokens": check_count_tokens,
        "models": check_models,
    }
    try:
        return [await _run_one(name, model.id, checks[name]) for name in CAPABILITIES]
    finally:
        await client.get_client().close()


def configured() -> bool:
    return bool(settings.ANTHROPIC_API_KEY)
