"""The saved messages the chat page draws itself, before its script runs.

The script (static/chat/messages.js) draws every message from the page's JSON, which it must load,
parse and run first: on a slow phone the messages came seconds after the rest of the page. Where
the server can draw the page's messages exactly as the script would, the page carries them
(templates/chat/drawn_messages.html), and the script adopts what is drawn instead of drawing it
again: it adds the actions, the times and the code colours, which change no size.

The server draws a page's messages only when it can draw all of them, so nothing the script adds
later pushes a drawn message aside: finished text (a user's words; a reply's Markdown, see
chat/views/markdown.py) and a reply's thinking (its panel, closed), no formula (KaTeX is the
browser's), no citation, tool step or attachment, and no note under the message (a stop reason
the page explains). Any other page is drawn by the script, as before.
"""

from __future__ import annotations

from hashlib import sha256

from django.core.cache import cache
from django.utils.safestring import SafeString, mark_safe

from chat.views.markdown import may_have_math, render_markdown

# The stop reasons the page notes under a reply (STOP_NOTES in static/chat/messages.js).
NOTED_STOP_REASONS = frozenset(
    {
        "stopped",
        "max_tokens",
        "refusal",
        "pause_turn",
        "stop_sequence",
        "model_context_window_exceeded",
    }
)


THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})

# A reply's HTML depends on its text alone, and rendering it is not free (Pygments most of it:
# ~210 ms for a page of 50 messages and 101 KB; 0.5 ms from the cache; bench/drawn_render.py),
# so each is kept in Django's cache (local memory, per process), keyed by its text's hash and
# the renderer's version: bump it when chat/views/markdown.py's output changes.
RENDER_VERSION = 1
RENDERED_CACHE_SECONDS = 7 * 24 * 3600


def _drawable_blocks(message: dict) -> bool:
    """Text without citations; a reply's thinking too (its panel is drawn, closed)."""
    allowed = {"text"} | (THINKING_TYPES if message.get("role") == "assistant" else set())
    return all(
        isinstance(block, dict) and block.get("type") in allowed and not block.get("citations")
        for block in message.get("content") or []
    )


def _drawable(message: dict) -> bool:
    if message.get("status") != "done" or message.get("stop_reason") in NOTED_STOP_REASONS:
        return False
    if not _drawable_blocks(message):
        return False
    return message.get("role") == "user" or not may_have_math(message.get("text") or "")


def _thinking(content: list) -> tuple[str, bool]:
    """The thinking panel's text and whether some thinking was redacted (extrasFromContent in
    messages.js): the thinking blocks' texts, a blank line between them."""
    texts = [
        block["thinking"]
        for block in content
        if block.get("type") == "thinking" and isinstance(block.get("thinking"), str)
        if block["thinking"]
    ]
    redacted = any(block.get("type") == "redacted_thinking" for block in content)
    return "\n\n".join(texts), redacted


def _cache_key(text: str) -> str:
    digest = sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"drawn-reply:{RENDER_VERSION}:{digest}"


def replies_html(texts: list[str]) -> dict[str, SafeString]:
    """Each reply text's sanitised HTML, from the cache where it is (one read for all), else
    rendered and kept."""
    keys = {text: _cache_key(text) for text in texts}
    found = cache.get_many(list(keys.values()))
    fresh = {}
    html = {}
    for text, key in keys.items():
        if key not in found:
            found[key] = fresh[key] = render_markdown(text)
        # render_markdown's output is sanitised by an allowlist: safe to insert as it is.
        html[text] = mark_safe(found[key])  # noqa: S308
    if fresh:
        cache.set_many(fresh, timeout=RENDERED_CACHE_SECONDS)
    return html


def page_messages(messages: list[dict]) -> list[dict] | None:
    """The page's messages (message dicts, oldest first) as the template draws them: id, role,
    and for a reply its sanitised HTML; None when the script must draw the page (see above)."""
    if not messages or not all(_drawable(m) for m in messages):
        return None
    html = replies_html([m["text"] for m in messages if m["role"] == "assistant"])
    drawn = []
    for message in messages:
        thinking, redacted = _thinking(message.get("content") or [])
        drawn.append(
            {
                "id": message["id"],
                "role": message["role"],
                "text": message["text"],
                "html": html.get(message["text"]) if message["role"] == "assistant" else None,
                "thinking": thinking,
                "thinking_redacted": redacted,
            }
        )
    return drawn
