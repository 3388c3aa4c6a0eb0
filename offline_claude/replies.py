"""Deterministic reply planning: what offline Claude answers, as chunks.

A reply is a list of :class:`PlannedBlock` (compaction, thinking, text, tool_use). Every
chunk is one output token and one streamed delta (a compaction block's summary is one delta
and its own iteration's output: see ``compaction.py``). The *current turn* is everything after
the user's latest text message (see :func:`analyse_turn`). Priority of the modes:

0. ``[[offline call=A,B]]`` while the turn has completed fewer than ``rounds`` tool
   rounds: a short text plus one ``tool_use`` block per name; next, the web search tool
   offered and searches asked for, or a paused search turn sent back (``web_search.py``)
1. ``[[offline reply]]``: the text after the directive line, verbatim (with
   ``escapes``, each ``\\uXXXX`` in it as its code point)
2. ``[[offline words=N]]``: N deterministic filler chunks
2b. the system prompt asks for a title and no tool is offered: a title of the user's request
   (``title_reply``), as Claude would write it
3. the last message carries ``tool_result`` blocks: a report of the results
4. tools are offered and the user's text asks to calculate / for the time or
   date (or ``tool_choice`` forces a tool): a short text plus a ``tool_use`` block
5. the user's latest text message holds documents: what was received, then quotes of
   each, with citations where the documents enable them (``documents.py``)
6. the default markdown reply describing what was received

When the request ends with an ``assistant`` message (a prefill), the reply is planned
as without it and only the part of its text after the prefill is emitted (the whole
reply if it does not start with the prefill). ``stop_sequences`` cut the text where
they first occur; ``max_tokens`` caps the total number of chunks (a ``tool_use``
block that does not fit is dropped); on the turn's first round ``pause_after`` does
the same with ``stop_reason: "pause_turn"`` and ``stop`` overrides the stop reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from . import documents, thinking
from .directives import Directives, unescape
from .errors import new_id
from .thinking import THINKING_KINDS
from .tokens import Segment

_CHUNK_RE = re.compile(r"\s*\S+\s*|\s+")
_ARITH_RE = re.compile(r"\d+(?:\.\d+)?(?:\s*[-+*/x×^]\s*\(?\s*\d+(?:\.\d+)?\)?)+")
_CALC_WORDS_RE = re.compile(r"\b(calculate|compute|calc|evaluate|sum of|product of)\b", re.I)
_TIME_WORDS_RE = re.compile(r"\b(time|date|today|day is it|clock)\b", re.I)
_JSON_CHUNK = 12

FILLER_WORDS = (  # noqa: SIM905 - a word list reads better as a sentence
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud "
    "exercitation ullamco laboris nisi aliquip ex ea commodo consequat"
).split()


def chunk_text(text: str) -> list[str]:
    """Split ``text`` into word chunks (a word plus following whitespace).

    ``"".join(chunk_text(t)) == t`` for every string.
    """
    return _CHUNK_RE.findall(text)


def filler_chunks(count: int) -> list[str]:
    """Exactly ``count`` deterministic chunks: ``"lorem "``, ``"ipsum "``, ...

    Every 12th chunk ends with ``".\n"``; the last one ends with ``"."``.
    """
    chunks: list[str] = []
    for i in range(count):
        word = FILLER_WORDS[i % len(FILLER_WORDS)]
        if i == count - 1:
            chunks.append(word + ".")
        elif i % 12 == 11:
            chunks.append(word + ".\n")
        else:
            chunks.append(word + " ")
    return chunks


@dataclass
class PlannedBlock:
    """One output content block; ``chunks`` are its deltas (text, thinking or partial JSON).

    A thinking block whose text is not displayed (``shown`` false: ``display: "omitted"``) and
    a ``redacted_thinking`` block still count their chunks as output tokens but stream none.
    """

    type: str
    chunks: list[str]
    tool_id: str = ""
    tool_name: str = ""
    tool_input: dict[str, Any] = field(default_factory=dict)
    signature: str = ""
    shown: bool = True
    citations: list[dict[str, Any]] | None = None
    """A text block's citations (streamed as ``citations_delta``); ``None``: uncited."""

    @property
    def text(self) -> str:
        """The concatenated chunks."""
        return "".join(self.chunks)

    @property
    def streamed_chunks(self) -> list[str]:
        """The chunks sent as deltas."""
        if self.type == "redacted_thinking" or not self.shown:
            return []
        return self.chunks

    def final(self) -> dict[str, Any]:
        """The block as it appears in a non-streamed Message's ``content``."""
        if self.type in ("tool_use", "server_tool_use"):
            return {
                "type": self.type,
                "id": self.tool_id,
                "name": self.tool_name,
                "input": self.tool_input,
            }
        if self.type == "thinking":
            shown = self.text if self.shown else ""
            return {"type": "thinking", "thinking": shown, "signature": self.signature}
        if self.type == "redacted_thinking":
            return {"type": "redacted_thinking", "data": self.signature}
        if self.type == "web_search_tool_result":
            return {"type": self.type, "tool_use_id": self.tool_id, "content": []}
        if self.type == "compaction":
            return {"type": "compaction", "content": self.text}
        if self.citations is not None:
            return {"type": "text", "text": self.text, "citations": self.citations}
        return {"type": "text", "text": self.text}

    def start(self) -> dict[str, Any]:
        """The block as announced by ``content_block_start`` (empty text / input)."""
        if self.type in ("tool_use", "server_tool_use"):
            return {"type": self.type, "id": self.tool_id, "name": self.tool_name, "input": {}}
        if self.type == "thinking":
            return {"type": "thinking", "thinking": "", "signature": ""}
        if self.type in ("redacted_thinking", "web_search_tool_result"):
            return self.final()
        if self.type == "compaction":  # the summary comes whole, in one compaction_delta
            return {"type": "compaction", "content": None}
        if self.citations is not None:
            return {"type": "text", "text": "", "citations": []}
        return {"type": "text", "text": ""}

    def delta(self, chunk: str) -> dict[str, Any]:
        """The ``delta`` object of a ``content_block_delta`` carrying ``chunk``."""
        if self.type in ("tool_use", "server_tool_use"):
            return {"type": "input_json_delta", "partial_json": chunk}
        if self.type == "thinking":
            return {"type": "thinking_delta", "thinking": chunk}
        if self.type == "compaction":
            return {"type": "compaction_delta", "content": chunk}
        return {"type": "text_delta", "text": chunk}


@dataclass
class ReplyPlan:
    """The whole reply: blocks plus the final ``stop_reason`` / ``stop_sequence``."""

    blocks: list[PlannedBlock]
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None

    @property
    def output_tokens(self) -> int:
        """One token per chunk (at least 1, as the real API never reports 0). A compaction
        block is its own iteration's output, not the reply's."""
        return max(1, sum(len(b.chunks) for b in self.blocks if b.type != "compaction"))

    @property
    def text(self) -> str:
        """Concatenated text of the text blocks."""
        return "".join(b.text for b in self.blocks if b.type == "text")


def has_text(message: dict[str, Any]) -> bool:
    """Whether ``message`` has text: string content or at least one text block."""
    content = message.get("content")
    if isinstance(content, str):
        return True
    return any(isinstance(b, dict) and b.get("type") == "text" for b in content or [])


def has_tool_results(message: dict[str, Any] | None) -> bool:
    """Whether ``message`` holds at least one ``tool_result`` block."""
    content = message.get("content") if message is not None else None
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def has_tool_use(message: dict[str, Any]) -> bool:
    """Whether ``message`` holds at least one ``tool_use`` block."""
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_use" for b in content
    )


@dataclass(frozen=True)
class Turn:
    """Where a request stands in the current turn."""

    anchor: int
    """Index of the user's latest text message (the one whose directive counts)."""
    prefill: str | None
    """Text the reply of this round already has, when the request continues it (a final
    assistant message, or assistant messages followed by requests to continue), else ``None``."""
    tool_rounds: int
    """Tool rounds completed in the turn: assistant messages with ``tool_use`` after the
    anchor (a final prefilled assistant message is not counted)."""
    after_tool_results: bool
    """Whether the round answers a user message with ``tool_result``s."""
    round_start: int = 0
    """Index of the message this round answers: the anchor or the latest tool results."""
    new_message: bool = True
    """Whether the reply is a new assistant message (not the continuation of a final one)."""

    @property
    def first_round(self) -> bool:
        """Neither a continuation nor an answer to tool results."""
        return self.prefill is None and not self.after_tool_results


_CONTINUE_RE = re.compile(r"^\W*(?:please[\s,]+)?(?:continue|go on|keep going)\b", re.I)


def asks_to_continue(messages: list[dict[str, Any]], index: int) -> bool:
    """Whether ``messages[index]`` is a user message that only asks the model to continue its
    previous (assistant) message — "Continue…", "Go on…", "Keep going…", without a directive."""
    message = messages[index]
    if (
        index == 0
        or message.get("role") != "user"
        or messages[index - 1].get("role") != ("assistant")
    ):
        return False
    text = message_text(message)
    return "[[offline" not in text and bool(_CONTINUE_RE.match(text))


def analyse_turn(messages: list[dict[str, Any]]) -> Turn:
    """Locate the current turn in a validated ``messages`` list.

    The anchor is the last user message that has text; a user message without text
    is skipped when it holds ``tool_result`` blocks (it answers tool calls, it does not
    start a turn), and so is one that only asks to continue the reply before it. A user
    message with neither (only images, say) is an anchor too.
    """
    continuing = messages[-1].get("role") == "assistant"
    history = messages[:-1] if continuing else messages
    anchor = 0
    round_start = len(history) - 1
    found_round = False
    for index in range(len(history) - 1, -1, -1):
        message = history[index]
        if message.get("role") != "user" or asks_to_continue(messages, index):
            continue
        if not found_round:
            round_start, found_round = index, True
        if has_text(message) or not has_tool_results(message):
            anchor = index
            break
    rounds = sum(
        1 for m in history[anchor + 1 :] if m.get("role") == "assistant" and has_tool_use(m)
    )
    written = [m for m in messages[round_start + 1 :] if m.get("role") == "assistant"]
    start = messages[round_start] if messages else None
    return Turn(
        anchor=anchor,
        prefill="".join(prefill_text(m) for m in written) if written else None,
        tool_rounds=rounds,
        after_tool_results=bool(
            start is not None and start.get("role") == "user" and has_tool_results(start)
        ),
        round_start=round_start,
        new_message=not continuing,
    )


def prefill_text(message: dict[str, Any]) -> str:
    """The text of a final assistant message: string content or its text blocks joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(
        b["text"]
        for b in content or []
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )


@dataclass(frozen=True)
class Conversation:
    """The parts of a request the reply planner looks at."""

    body: dict[str, Any]
    segments: list[Segment]
    user_text: str
    """Visible text of the user's latest text message (directive removed)."""
    reply_text: str
    """Text after the directive line (for ``reply`` mode)."""
    turn: Turn | None = None
    """Position in the current turn (computed from ``body`` when omitted)."""
    thinking: bool = False
    """Whether the reply starts with a thinking block (the request or the model's default)."""
    thinking_shown: bool = True
    """Whether thinking text is returned (``display: "summarized"``) or only its signature."""
    documents: documents.Library = documents.Library()
    """The request's document blocks, read (``documents.load``)."""

    def current_turn(self) -> Turn:
        """``turn``, or the analysis of ``body['messages']``."""
        return self.turn if self.turn is not None else analyse_turn(self.body["messages"])


def message_text(message: dict[str, Any] | None) -> str:
    """All text of a message: the string content or its text blocks joined by newlines."""
    if message is None:
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = [b["text"] for b in content or [] if isinstance(b, dict) and b.get("type") == "text"]
    return "\n".join(p for p in parts if isinstance(p, str))


def _quote(text: str, words: int = 12) -> str:
    tokens = text.split()
    if not tokens:
        return "(no text, just attachments)"
    quoted = " ".join(tokens[:words])
    return quoted + ("…" if len(tokens) > words else "")


def _received_lines(conv: Conversation) -> list[str]:
    messages = conv.body["messages"]
    users = sum(1 for m in messages if m.get("role") == "user")
    lines = [f"- {len(messages)} message(s) in the conversation, {users} from you"]
    system = conv.body.get("system")
    if system:
        chars = (
            len(system) if isinstance(system, str) else sum(len(b.get("text", "")) for b in system)
        )
        lines.append(f"- a system prompt of {chars} characters")
    for segment in conv.segments:
        image = segment.image
        if image is None:
            continue
        if image.url_host is not None or image.source_type == "url":
            lines.append(f"- an image by URL from host `{image.url_host or 'unknown'}`")
        elif image.width and image.height:
            lines.append(f"- an image `{image.media_type}` of {image.width}×{image.height} px")
        else:
            lines.append(f"- an image `{image.media_type or image.source_type}` I could not decode")
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            docs = sum(1 for b in content if isinstance(b, dict) and b.get("type") == "document")
            if docs:
                lines.append(f"- {docs} document(s)")
    results = sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_result"
    )
    if results:
        lines.append(f"- {results} tool result(s)")
    tools = conv.body.get("tools") or []
    if tools:
        names = ", ".join(f"`{t.get('name')}`" for t in tools)
        lines.append(f"- {len(tools)} tool definition(s): {names}")
    return lines


def default_reply(conv: Conversation) -> str:
    """The default deterministic markdown reply (about 80-150 words)."""
    received = "\n".join(_received_lines(conv))
    return (
        "**Offline Claude** here: a local stand-in model, so this answer was produced "
        "without any network access.\n\n"
        f"> {_quote(conv.user_text)}\n\n"
        f"Here is what I received:\n\n{received}\n\n"
        "A small code sample, so you can check how code renders:\n\n"
        "```python\n"
        "def greet(name: str) -> str:\n"
        '    """Return a friendly greeting."""\n'
        '    return f"Hello, {name}!"\n'
        "```\n\n"
        "This reply is deterministic: the same conversation always produces the same "
        "words, which makes it handy for tests and demos. Token counts are simple too, "
        "about one token per word here, and one per four characters of input."
    )


_TITLE_WORD_RE = re.compile(r"\btitles?\b", re.I)
_REQUEST_RE = re.compile(r"<request>(.*?)</request>", re.S)
_LEAD_INS_RE = re.compile(
    r"^(?:(?:please|hi|hello|hey|can you|could you|would you|will you|help me|i want to|"
    r"i'd like to|i need to|i would like to)\b[\s,!]*)+",
    re.I,
)
TITLE_WORDS = 6


def _system_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    blocks = [b for b in system or [] if isinstance(b, dict) and b.get("type") == "text"]
    return " ".join(str(b.get("text", "")) for b in blocks)


def title_reply(conv: Conversation) -> str | None:
    """A request for a title (the system prompt asks for one and no tool is offered) is answered
    as Claude answers it: a few words naming what the user asks — the text inside
    ``<request>`` tags if the message has them, else the whole message — never a reply to it."""
    if conv.body.get("tools") or not _TITLE_WORD_RE.search(_system_text(conv.body)):
        return None
    quoted = _REQUEST_RE.search(conv.user_text)
    return make_title(quoted.group(1) if quoted else conv.user_text)


def make_title(text: str) -> str:
    """The first sentence's first words, lead-ins ("please", "can you"…) dropped, no final
    punctuation, capitalised: "can you plan a trip to Lyon?" → "Plan a trip to Lyon"."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    sentence = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0]
    sentence = _LEAD_INS_RE.sub("", sentence) or sentence  # "hello" alone stays
    words = [w.strip("\"'()[]{}<>*_`#") for w in sentence.split()]
    title = " ".join(w for w in words if w)
    title = " ".join(title.split()[:TITLE_WORDS]).rstrip(".,;:!?-")
    return title[:1].upper() + title[1:] if title else "Untitled request"


def _block_result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type')}]")
        text = " ".join(parts)
    else:
        text = ""
    text = " ".join(text.split())
    return (text[:200] + "…") if len(text) > 200 else (text or "(empty)")


def tool_results_reply(conv: Conversation, message: dict[str, Any]) -> str | None:
    """A report of the ``tool_result`` blocks in ``message``, or ``None`` if it has none."""
    content = message.get("content")
    results = (
        [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if isinstance(content, list)
        else []
    )
    if not results:
        return None
    names: dict[str, str] = {}
    for m in conv.body["messages"]:
        if m.get("role") == "assistant" and isinstance(m.get("content"), list):
            for b in m["content"]:
                if isinstance(b, dict) and b.get("type") == "tool_use":
                    names[str(b.get("id"))] = str(b.get("name"))
    lines = []
    for block in results:
        name = names.get(str(block.get("tool_use_id")), "tool")
        verb = "reported an error" if block.get("is_error") else "returned"
        lines.append(f"- `{name}` {verb}: {_block_result_text(block)}")
    answer = _block_result_text(results[-1])
    return (
        "Thanks, I got the tool results:\n\n"
        + "\n".join(lines)
        + f"\n\nSo the answer is **{answer}**."
    )


def _find_tool(tools: list[dict[str, Any]], *needles: str) -> dict[str, Any] | None:
    for tool in tools:
        name = str(tool.get("name", "")).lower()
        if any(n in name for n in needles):
            return tool
    return None


def _value_for(name: str, schema: dict[str, Any], expression: str, numbers: list[float]) -> Any:
    kind = schema.get("type")
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    lname = name.lower()
    if kind in ("number", "integer"):
        value = numbers.pop(0) if numbers else 0
        return int(value) if kind == "integer" or float(value).is_integer() else value
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return {}
    if "zone" in lname or lname in ("tz", "timezone"):
        return "UTC"
    if "format" in lname:
        return "iso"
    return expression


def tool_input(tool: dict[str, Any], expression: str) -> dict[str, Any]:
    """An input for ``tool`` following its ``input_schema`` as well as possible.

    Required properties are always filled (strings with ``expression``, ``"UTC"`` for
    time-zone fields, numbers taken from ``expression`` in order, enums with their first
    value); if no required property is a string, the first string property gets
    ``expression`` too.
    """
    schema = tool.get("input_schema") if isinstance(tool.get("input_schema"), dict) else {}
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = (
        [r for r in schema.get("required", []) if isinstance(r, str)]
        if isinstance(schema.get("required"), list)
        else []
    )
    numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", expression)]
    names = list(required)
    if expression and not any(properties.get(n, {}).get("type") == "string" for n in names):
        first_string = next(
            (n for n, s in properties.items() if isinstance(s, dict) and s.get("type") == "string"),
            None,
        )
        if first_string is not None and first_string not in names:
            names.append(first_string)
    return {n: _value_for(n, properties.get(n) or {}, expression, numbers) for n in names}


def _tool_choice(conv: Conversation) -> dict[str, Any] | None:
    """Decide whether to call a tool; return the chosen tool definition."""
    tools = [
        t
        for t in conv.body.get("tools") or []
        if isinstance(t, dict) and t.get("type") in (None, "custom")
    ]
    choice = conv.body.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none":
        return None
    if choice.get("type") == "tool":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    text = conv.user_text
    wants_calc = bool(_CALC_WORDS_RE.search(text) or _ARITH_RE.search(text))
    wants_time = bool(_TIME_WORDS_RE.search(text))
    tool = None
    if wants_calc:
        tool = _find_tool(tools, "calc", "math")
    if tool is None and wants_time:
        tool = _find_tool(tools, "time", "date", "clock")
    if tool is None and choice.get("type") == "any":
        tool = tools[0]
    return tool


def _expression(conv: Conversation) -> str:
    """What tool inputs are built from: the arithmetic in the user's text, else its start."""
    match = _ARITH_RE.search(conv.user_text)
    if match:
        return match.group(0).replace("x", "*").replace("×", "*")
    return " ".join(conv.user_text.split())[:200]


def _tool_use_block(name: str, payload: dict[str, Any]) -> PlannedBlock:
    encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    json_chunks = [encoded[i : i + _JSON_CHUNK] for i in range(0, len(encoded), _JSON_CHUNK)]
    return PlannedBlock(
        "tool_use", [""] + json_chunks, tool_id=new_id("toolu_"), tool_name=name, tool_input=payload
    )


def _names_phrase(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    if len(quoted) == 1:
        return f"the {quoted[0]} tool"
    return f"the {', '.join(quoted[:-1])} and {quoted[-1]} tools"


def _tool_use_blocks(conv: Conversation, names: list[str]) -> list[PlannedBlock]:
    """A short text plus one ``tool_use`` per name, in order (parallel tool calls).

    The input follows the offered tool's ``input_schema``; a name that is not offered
    gets ``{}``.
    """
    offered = {str(t.get("name")): t for t in conv.body.get("tools") or [] if isinstance(t, dict)}
    expression = _expression(conv)
    text = PlannedBlock("text", chunk_text(f"I'll use {_names_phrase(names)} for that."))
    uses = [
        _tool_use_block(name, tool_input(offered[name], expression) if name in offered else {})
        for name in names
    ]
    return [text, *uses]


def _thinking_block(conv: Conversation, directives: Directives) -> PlannedBlock:
    """The reply's thinking; signed once the reply is final (see :func:`plan_reply`)."""
    if directives.thinking_words is not None:
        chunks = filler_chunks(directives.thinking_words)
    else:
        chunks = chunk_text(
            f"The user wrote: {_quote(conv.user_text, 8)} "
            "I am the offline model, so I will answer deterministically."
        )
    if directives.redact:
        return PlannedBlock("redacted_thinking", chunks)
    return PlannedBlock("thinking", chunks, shown=conv.thinking_shown)


def _apply_limits(
    plan: ReplyPlan, stop_sequences: list[str], max_tokens: int, pause_after: int | None = None
) -> None:
    """Cut ``plan`` at the first stop sequence, then after ``max_tokens`` chunks.

    With ``pause_after`` (not above ``max_tokens``) the cut happens after that many
    chunks instead, with ``stop_reason: "pause_turn"``.
    """
    for block in plan.blocks:
        if block.type != "text" or not stop_sequences:
            continue
        hits = [(block.text.find(s), s) for s in stop_sequences if s and s in block.text]
        if hits:
            position, sequence = min(hits)
            block.chunks = chunk_text(block.text[:position])
            plan.blocks = plan.blocks[: plan.blocks.index(block) + 1]
            plan.stop_reason, plan.stop_sequence = "stop_sequence", sequence
            break
    budget, reason = max_tokens, "max_tokens"
    if pause_after is not None and pause_after <= max_tokens:
        budget, reason = pause_after, "pause_turn"
    kept: list[PlannedBlock] = []
    for block in plan.blocks:
        if len(block.chunks) <= budget:
            kept.append(block)
            budget -= len(block.chunks)
            continue
        if block.type not in ("tool_use", "server_tool_use") and budget > 0:
            block.chunks = block.chunks[:budget]
            kept.append(block)
        plan.stop_reason, plan.stop_sequence = reason, None
        break
    plan.blocks = kept or [PlannedBlock("text", [])]


def _base_plan(conv: Conversation, directives: Directives, turn: Turn) -> ReplyPlan:
    """The complete reply for this round, before any prefill, limit or ``stop``."""
    body = conv.body
    blocks = [_thinking_block(conv, directives)] if conv.thinking else []
    tools_allowed = (body.get("tool_choice") or {}).get("type") != "none"
    if directives.call and turn.tool_rounds < directives.rounds and tools_allowed:
        return ReplyPlan(blocks + _tool_use_blocks(conv, list(directives.call)), "tool_use")
    from . import web_search  # noqa: PLC0415 - web_search builds on this module's blocks

    searched = web_search.plan(conv, directives, turn)
    if searched is not None:
        return ReplyPlan(blocks + searched.blocks, searched.stop_reason)
    if directives.reply:
        text = unescape(conv.reply_text) if directives.escapes else conv.reply_text
        return ReplyPlan([*blocks, PlannedBlock("text", chunk_text(text))])
    if directives.words is not None:
        return ReplyPlan([*blocks, PlannedBlock("text", filler_chunks(directives.words))])
    title = title_reply(conv)
    if title is not None:
        return ReplyPlan([*blocks, PlannedBlock("text", chunk_text(title))])
    messages = body["messages"]
    last = messages[turn.round_start]
    report = tool_results_reply(conv, last) if last.get("role") == "user" else None
    if report is not None:
        return ReplyPlan([*blocks, PlannedBlock("text", chunk_text(report))])
    tool = _tool_choice(conv)
    if tool is not None:
        return ReplyPlan(blocks + _tool_use_blocks(conv, [str(tool.get("name"))]), "tool_use")
    about = documents.reply(conv.documents, turn.anchor, directives.cite_page)
    if about is not None:
        parts = [PlannedBlock("text", chunk_text(t), citations=c) for t, c in about.parts]
        return ReplyPlan([*blocks, *parts])
    return ReplyPlan([*blocks, PlannedBlock("text", chunk_text(default_reply(conv)))])


def _continuation(plan: ReplyPlan, prefill: str, *, new_message: bool) -> ReplyPlan:
    """What follows ``prefill`` in ``plan``: the rest of its text, then its tool calls.

    If the plan's text does not start with the prefill, the whole text is emitted. A new
    assistant message (after a request to continue) starts with its own thinking; the
    continuation of a final assistant message does not repeat it.
    """
    full = plan.text
    rest = full[len(prefill) :] if full.startswith(prefill) else full
    thinking = [b for b in plan.blocks if b.type in THINKING_KINDS] if new_message else []
    blocks = thinking + ([PlannedBlock("text", chunk_text(rest))] if rest else [])
    blocks += [b for b in plan.blocks if b.type == "tool_use"]
    return ReplyPlan(blocks, plan.stop_reason)


def _pause_in_server_tool(plan: ReplyPlan, conv: Conversation) -> None:
    """A turn paused by the API ends in a server tool call it has not run yet."""
    query = " ".join(conv.user_text.split())[:60] or "offline"
    plan.blocks.append(_tool_use_block("web_search", {"query": query}))
    plan.blocks[-1].type = "server_tool_use"
    plan.blocks[-1].tool_id = new_id("srvtoolu_")


def _paused_call(messages: list[dict[str, Any]]) -> str | None:
    """The id of the server tool call a final (paused) assistant message ends with."""
    content = messages[-1].get("content") if messages[-1].get("role") == "assistant" else None
    if isinstance(content, list) and content and content[-1].get("type") == "server_tool_use":
        return str(content[-1].get("id"))
    return None


def _sign(plan: ReplyPlan, conv: Conversation, model: str) -> None:
    """Bind each thinking block to the model and to everything before it."""
    messages = conv.body["messages"]
    if messages[-1].get("role") == "assistant":
        index, before = len(messages) - 1, list(messages[-1]["content"] or [])
        if isinstance(messages[-1]["content"], str):
            before = [{"type": "text", "text": messages[-1]["content"]}]
    else:
        index, before = len(messages), []
    for block in plan.blocks:
        if block.type in THINKING_KINDS:
            shown = block.text if block.type == "thinking" and block.shown else ""
            prefix = thinking.prefix_hash(conv.body, index, before)
            block.signature = thinking.sign(block.type, model, shown, prefix)
        before.append(block.final())


def plan_reply(
    conv: Conversation,
    directives: Directives,
    *,
    compaction: str | None = None,
    pause_after_compaction: bool = False,
) -> ReplyPlan:
    """Build the reply for a validated request (see module docstring).

    ``compaction`` is the summary of a compaction that happened before the reply: the reply
    then starts with that ``compaction`` block (and is the block alone with
    ``pause_after_compaction``, ``stop_reason: "compaction"``); thinking blocks after it are
    signed with it in their prefix.
    """
    turn = conv.current_turn()
    from . import web_search  # noqa: PLC0415 - web_search builds on this module's blocks

    plan = _base_plan(conv, directives, turn)
    if web_search.resumes_paused_search(conv.body["messages"]):
        # The sent-back searches are answered as they are; the reply holds no new thinking.
        plan.blocks = [b for b in plan.blocks if b.type not in THINKING_KINDS]
    elif turn.prefill is not None:
        plan = _continuation(plan, turn.prefill, new_message=turn.new_message)
    paused = _paused_call(conv.body["messages"])
    if paused is not None:  # the API runs the pending search first
        plan.blocks.insert(0, web_search.pending_result(conv.body, paused))
    pause_after = directives.pause_after if turn.first_round else None
    _apply_limits(
        plan, list(conv.body.get("stop_sequences") or []), int(conv.body["max_tokens"]), pause_after
    )
    if plan.stop_reason == "pause_turn" and pause_after is not None:
        _pause_in_server_tool(plan, conv)
    if directives.stop is not None and turn.first_round:
        plan.stop_reason = directives.stop
        plan.stop_sequence = "###" if directives.stop == "stop_sequence" else None
    if compaction is not None:
        block = PlannedBlock("compaction", [compaction])
        if pause_after_compaction:
            plan.blocks, plan.stop_reason, plan.stop_sequence = [], "compaction", None
        plan.blocks.insert(0, block)
    _sign(plan, conv, str(conv.body["model"]))
    return plan
