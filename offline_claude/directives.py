"""Parsing of the ``[[offline key=value ...]]`` steering directive.

The directive is read from the user's latest TEXT message: the last ``user`` message
that has text (its text blocks joined by newlines). A user message that holds only
``tool_result`` blocks (no text) is skipped, so one directive steers the whole turn:
its tool rounds and its continuations. The *current turn* is everything after that
message. If the text holds several directives, the last one counts. Keys (all
optional; unknown keys are ignored)::

    words=N          reply with exactly N filler chunks (N output tokens)
    reply            reply with exactly the text after the directive line
    escapes          with reply: each \\uXXXX in that text stands for the code point U+XXXX
                     (how a test makes the model write NUL or a lone surrogate)
    call=A[,B...]    tool rounds: a short text plus one tool_use per name (parallel
                     calls, input from the offered tool's input_schema, {} for an
                     unknown name), stop_reason tool_use, while the turn has completed
                     fewer than ``rounds`` tool rounds; then the normal reply (the
                     tool results report unless words/reply is given)
    rounds=N         tool rounds ``call`` asks for (default 1)
    redact           when the reply thinks, its thinking comes as a ``redacted_thinking``
                     block (opaque ``data``, no text) instead of a ``thinking`` block
    thinking_words=N when the reply thinks, its thinking is N filler chunks (N output
                     tokens) instead of a short sentence about the user's text
    cite_page=N      a reply about PDFs quotes (and cites) the first sentence of page N
    pause_after=N    first round only: stop after N chunks with stop_reason pause_turn
    search=N         when the web search tool is offered, the first round makes N searches
                     (server_tool_use + web_search_tool_result each), then a cited answer
    search_error=E   every search of the round fails with error_code E (too_many_requests,
                     invalid_tool_input, query_too_long, request_too_large, unavailable)
    search_pause     the searching round ends after its searches with stop_reason pause_turn
    pace_ms=F        delay between streamed deltas (default env OFFLINE_CLAUDE_PACE_MS or 20)
    first_ms=F       delay before message_start (or before the non-stream response)
    stop=REASON      first round only: end_turn|max_tokens|refusal|stop_sequence
                     |pause_turn|tool_use|model_context_window_exceeded
    status=N         fail with HTTP status N before any streaming
    error_type=T     error type for status/error_after (default derived from the status)
    message=TEXT     error message (no spaces; underscores are kept)
    error_code=CODE  adds error.details.error_code (selects SDK subclasses)
    retry_after=S    adds a retry-after header to the status error
    error_after=N    SSE error event after N content deltas, then end the stream
    drop_after=N     abort the TCP connection after N content deltas
    stall_after=N    go silent after N content deltas for stall_s seconds
    stall_s=F        stall duration (default 600)
    fail_times=K     the failure keys above only apply to the first K requests that
                     carry this exact directive text; later ones succeed

The *first round* of a turn is a request that neither continues a prefilled final
assistant message nor answers tool results. The failure keys, ``pace_ms`` and
``first_ms`` apply to every round of the turn.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import invalid

DIRECTIVE_RE = re.compile(r"\[\[offline(?:[ \t]+(?P<args>[^\]\n]*?))?[ \t]*\]\]")

STOP_REASONS = frozenset(
    {
        "end_turn",
        "max_tokens",
        "refusal",
        "stop_sequence",
        "pause_turn",
        "tool_use",
        "model_context_window_exceeded",
    }
)

_INT_KEYS = frozenset(
    {
        "words",
        "thinking_words",
        "rounds",
        "pause_after",
        "cite_page",
        "status",
        "error_after",
        "drop_after",
        "stall_after",
        "fail_times",
        "search",
    }
)
_FLOAT_KEYS = frozenset({"pace_ms", "first_ms", "stall_s"})
_STR_KEYS = frozenset(
    {"stop", "error_type", "message", "error_code", "retry_after", "search_error"}
)
_FLAGS = frozenset({"reply", "escapes", "redact", "search_pause"})
SEARCH_ERRORS = frozenset(
    {
        "too_many_requests",
        "invalid_tool_input",
        "query_too_long",
        "request_too_large",
        "unavailable",
    }
)


@dataclass(frozen=True)
class Directives:
    """Parsed steering options; ``raw`` is the exact directive text (``None`` if absent)."""

    raw: str | None = None
    words: int | None = None
    reply: bool = False
    escapes: bool = False
    redact: bool = False
    thinking_words: int | None = None
    call: tuple[str, ...] = ()
    rounds: int = 1
    pause_after: int | None = None
    cite_page: int | None = None
    pace_ms: float | None = None
    first_ms: float = 0.0
    stop: str | None = None
    status: int | None = None
    error_type: str | None = None
    message: str | None = None
    error_code: str | None = None
    retry_after: str | None = None
    error_after: int | None = None
    drop_after: int | None = None
    stall_after: int | None = None
    stall_s: float = 600.0
    fail_times: int | None = None
    search: int | None = None
    search_error: str | None = None
    search_pause: bool = False

    @property
    def has_failure(self) -> bool:
        """Whether any failure mode (status, error_after, drop_after, stall_after) is requested."""
        return any(
            v is not None
            for v in (self.status, self.error_after, self.drop_after, self.stall_after)
        )


@dataclass(frozen=True)
class ParsedText:
    """A user text split around its directive.

    ``visible`` is the text with the directive (and its line, if it was alone on it)
    removed; ``reply_text`` is everything after the first newline following the
    directive (``""`` if there is none), used verbatim in ``reply`` mode.
    """

    directives: Directives
    visible: str
    reply_text: str


def _parse_number(key: str, value: str, kind: type) -> float | int:
    try:
        number = int(value) if kind is int else float(value)
    except ValueError:
        raise invalid(f"offline directive: {key} must be a number, got {value!r}") from None
    if number < 0 or (isinstance(number, float) and not math.isfinite(number)):
        raise invalid(f"offline directive: {key} must be a non-negative number, got {value!r}")
    return number


def parse_directive_args(raw: str, args: str) -> Directives:
    """Build :class:`Directives` from the ``key=value`` words of a directive.

    Raises :class:`~offline_claude.errors.ApiError` (400) on malformed values, so a typo
    in a test is reported instead of silently ignored.
    """
    values: dict[str, object] = {"raw": raw}
    for word in args.split():
        key, sep, value = word.partition("=")
        key = key.strip().lower()
        if not sep:
            if key in _FLAGS:
                values[key] = True
            continue
        if key in _INT_KEYS:
            values[key] = int(_parse_number(key, value, int))
        elif key in _FLOAT_KEYS:
            values[key] = float(_parse_number(key, value, float))
        elif key in _STR_KEYS:
            values[key] = value
        elif key in _FLAGS:
            values[key] = value.lower() not in ("0", "false", "no", "off")
        elif key == "call":
            names = tuple(n for n in value.split(",") if n)
            if not names:
                raise invalid("offline directive: call needs at least one tool name")
            values[key] = names
    stop = values.get("stop")
    if stop is not None and stop not in STOP_REASONS:
        raise invalid(f"offline directive: unknown stop reason {stop!r}")
    search_error = values.get("search_error")
    if search_error is not None and search_error not in SEARCH_ERRORS:
        raise invalid(f"offline directive: unknown search error {search_error!r}")
    status = values.get("status")
    if isinstance(status, int) and not 400 <= status <= 599:
        raise invalid(f"offline directive: status must be 400..599, got {status}")
    return Directives(**values)  # type: ignore[arg-type]


_ESCAPE_RE = re.compile(r"\\u([0-9a-fA-F]{4})")


def unescape(text: str) -> str:
    """``text`` with each ``\\uXXXX`` replaced by the code point U+XXXX (``escapes``); as in
    JSON, a high and a low surrogate escape in a row make one character, a lone one stays."""
    decoded = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")


def strip_directives(text: str) -> str:
    """``text`` without any directive; lines that held only directives are removed."""
    lines = []
    for line in text.splitlines(keepends=True):
        stripped = DIRECTIVE_RE.sub("", line)
        if stripped != line and not stripped.strip():
            continue
        lines.append(stripped)
    return "".join(lines)


def parse_text(text: str) -> ParsedText:
    """Parse the LAST directive in ``text``; strip all directives from the visible text.

    The last one wins so that when an app merges consecutive user turns into one
    message, the newest turn's directive is the one obeyed.
    """
    matches = list(DIRECTIVE_RE.finditer(text))
    if not matches:
        return ParsedText(Directives(), text, "")
    match = matches[-1]
    directives = parse_directive_args(match.group(0), match.group("args") or "")
    after = text[match.end() :]
    newline = after.find("\n")
    reply_text = after[newline + 1 :] if newline >= 0 else ""
    return ParsedText(directives, strip_directives(text), reply_text)
