"""Deterministic token counting and prompt-caching emulation.

Counting rules (per block, so prefix counts add up):

* text (system text, message text, string content) and a compaction block's summary:
  ``ceil(len(text) / 4)``
* image: ``ceil(width * height / 750)`` when the base64 data decodes with Pillow,
  otherwise 1000 (also for URL images)
* document: its pages or text (see ``documents.py``: a PDF page at least 1,500 + its image)
* any other block (tool_use, tool_result, ...) and each tool definition:
  ``ceil(len(json) / 4)`` of its compact JSON

The request is flattened into *segments* in the order the real API caches them:
tools, then system blocks, then message blocks. Prompt caching follows the real
rules closely: each block with ``cache_control`` is a breakpoint; a request reads the
longest previously written prefix found at a breakpoint or up to 20 blocks before
it; every breakpoint beyond that whose prefix has at least ``min_tokens`` tokens is
written. ``input_tokens`` excludes read and written tokens.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import documents

try:  # Pillow is optional: without it images count 1000 tokens and report no size.
    from PIL import Image
except ImportError:  # pragma: no cover - Pillow is a dependency of the project
    Image = None  # type: ignore[assignment]

UNKNOWN_IMAGE_TOKENS = 1000
LOOKBACK_BLOCKS = 20
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def text_tokens(text: str) -> int:
    """Tokens of a piece of text: one per started group of 4 characters."""
    return math.ceil(len(text) / 4)


def compact_json(value: Any) -> str:
    """Canonical compact JSON (sorted keys), used for counting and cache hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ImageInfo:
    """What could be learnt about an image block's source."""

    source_type: str
    media_type: str | None = None
    width: int | None = None
    height: int | None = None
    url_host: str | None = None

    @property
    def tokens(self) -> int:
        """``ceil(w*h/750)`` if the size is known, else 1000."""
        if self.width and self.height:
            return max(1, math.ceil(self.width * self.height / 750))
        return UNKNOWN_IMAGE_TOKENS


def describe_image(source: Any) -> ImageInfo:
    """Inspect an image ``source`` (base64 or url); never raises."""
    if not isinstance(source, dict):
        return ImageInfo(source_type="unknown")
    kind = str(source.get("type", "unknown"))
    if kind == "url":
        host = urlsplit(str(source.get("url", ""))).hostname
        return ImageInfo(source_type="url", url_host=host)
    media_type = source.get("media_type") if isinstance(source.get("media_type"), str) else None
    if kind != "base64" or Image is None or not isinstance(source.get("data"), str):
        return ImageInfo(source_type=kind, media_type=media_type)
    try:
        raw = base64.b64decode(source["data"], validate=False)
        with Image.open(io.BytesIO(raw)) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - any undecodable data just counts as unknown
        return ImageInfo(source_type=kind, media_type=media_type)
    return ImageInfo(source_type=kind, media_type=media_type, width=width, height=height)


@dataclass(frozen=True)
class Segment:
    """One cacheable unit of a request (a tool definition, system block or message block).

    ``key`` is the canonical JSON of the block without ``cache_control`` (plus its
    position kind and role), ``cache_control`` the block's marker if any.
    """

    key: str
    tokens: int
    cache_control: dict[str, Any] | None = None
    image: ImageInfo | None = None


def _without_cache_control(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def _cc(block: Any) -> dict[str, Any] | None:
    cc = block.get("cache_control") if isinstance(block, dict) else None
    return cc if isinstance(cc, dict) else None


def block_segment(block: Any, where: str) -> Segment:
    """Segment of one content block found at ``where`` (e.g. ``"user"``, ``"system"``)."""
    if isinstance(block, str):
        block = {"type": "text", "text": block}
    if not isinstance(block, dict):
        return Segment(compact_json([where, block]), text_tokens(compact_json(block)))
    plain = _without_cache_control(block)
    key = compact_json([where, plain])
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return Segment(key, text_tokens(block["text"]), _cc(block))
    if kind == "image":
        info = describe_image(block.get("source"))
        return Segment(key, info.tokens, _cc(block), image=info)
    if kind == "document":  # its pages or text, read (see documents.py)
        return Segment(key, documents.block_tokens(block), _cc(block))
    if kind == "compaction":  # its summary, read like text
        return Segment(key, text_tokens(str(block.get("content") or "")), _cc(block))
    return Segment(key, text_tokens(compact_json(plain)), _cc(block))


def request_segments(body: dict[str, Any]) -> list[Segment]:
    """Flatten a (validated) Messages request into segments: tools, system, messages."""
    segments: list[Segment] = []
    for tool in body.get("tools") or []:
        plain = _without_cache_control(tool) if isinstance(tool, dict) else tool
        text = compact_json(plain)
        segments.append(Segment(compact_json(["tool", plain]), text_tokens(text), _cc(tool)))
    system = body.get("system")
    if isinstance(system, str):
        if system:
            segments.append(block_segment(system, "system"))
    elif isinstance(system, list):
        segments.extend(block_segment(block, "system") for block in system)
    for message in body.get("messages") or []:
        role = str(message.get("role"))
        content = message.get("content")
        if isinstance(content, str):
            segments.append(block_segment(content, role))
        elif isinstance(content, list):
            segments.extend(block_segment(block, role) for block in content)
    return segments


def count_tokens(segments: list[Segment]) -> int:
    """Total input tokens of a request, as reported by ``/v1/messages/count_tokens``."""
    return sum(s.tokens for s in segments)


@dataclass(frozen=True)
class CacheUsage:
    """Input-token split of one request; ``input_tokens`` excludes cached tokens."""

    input_tokens: int
    cache_read_input_tokens: int = 0
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0
    # ``usage.iterations`` when the request asked for compaction (see compaction.py).
    iterations: tuple[dict[str, Any], ...] = ()
    # ``usage.server_tool_use.web_search_requests`` when the request offered web search.
    web_search_requests: int | None = None

    @property
    def cache_creation_input_tokens(self) -> int:
        """Tokens written to the cache (both TTLs)."""
        return self.ephemeral_5m_input_tokens + self.ephemeral_1h_input_tokens

    def as_usage(self, output_tokens: int) -> dict[str, Any]:
        """The ``usage`` object of a Message (non-stream response / message_start)."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.ephemeral_5m_input_tokens,
                "ephemeral_1h_input_tokens": self.ephemeral_1h_input_tokens,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
            **self._server_tool_use(),
            **self._iterations(),
        }

    def _server_tool_use(self) -> dict[str, Any]:
        if self.web_search_requests is None:
            return {}
        requests = {"web_search_requests": self.web_search_requests, "web_fetch_requests": 0}
        return {"server_tool_use": requests}

    def _iterations(self) -> dict[str, Any]:
        return {"iterations": list(self.iterations)} if self.iterations else {}

    def iteration(self, kind: str, output_tokens: int) -> dict[str, Any]:
        """This split as one entry of ``usage.iterations`` (``message`` or ``compaction``)."""
        return {
            "type": kind,
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.ephemeral_5m_input_tokens,
                "ephemeral_1h_input_tokens": self.ephemeral_1h_input_tokens,
            },
            "output_tokens": output_tokens,
        }

    def as_delta_usage(self, output_tokens: int) -> dict[str, Any]:
        """The cumulative ``usage`` object of a ``message_delta`` event."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": output_tokens,
            **self._server_tool_use(),
            **self._iterations(),
        }


@dataclass
class _Entry:
    expires: float
    ttl: float


@dataclass
class PromptCache:
    """In-memory emulation of Anthropic prompt caching (see module docstring).

    Not thread-safe; meant to be used from a single event loop.
    """

    min_tokens: int = 1024
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, _Entry] = field(default_factory=dict)

    def clear(self) -> None:
        """Forget every cached prefix."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, segments: list[Segment]) -> CacheUsage:
        """Compute the usage split for ``segments`` and update the cache (reads refresh TTLs)."""
        total = count_tokens(segments)
        breakpoints = [i for i, s in enumerate(segments) if s.cache_control is not None]
        if not breakpoints:
            return CacheUsage(input_tokens=total)
        now = self.clock()
        if len(self._entries) > 4096:
            self._entries = {k: e for k, e in self._entries.items() if e.expires > now}

        hashes: list[str] = []
        cumulative: list[int] = []
        digest = hashlib.sha256()
        running = 0
        for segment in segments:
            digest.update(segment.key.encode())
            digest.update(b"\x00")
            hashes.append(digest.copy().hexdigest())
            running += segment.tokens
            cumulative.append(running)

        candidates = sorted(
            {j for bp in breakpoints for j in range(max(0, bp - LOOKBACK_BLOCKS + 1), bp + 1)},
            reverse=True,
        )
        hit = -1
        for j in candidates:
            entry = self._entries.get(hashes[j])
            if entry is not None and entry.expires > now:
                entry.expires = now + entry.ttl
                hit = j
                break
        read = cumulative[hit] if hit >= 0 else 0

        written = {"5m": 0, "1h": 0}
        previous = read
        for bp in breakpoints:
            if bp <= hit or cumulative[bp] < self.min_tokens:
                continue
            ttl_name = str((segments[bp].cache_control or {}).get("ttl", "5m"))
            ttl_name = ttl_name if ttl_name in TTL_SECONDS else "5m"
            written[ttl_name] += cumulative[bp] - previous
            previous = cumulative[bp]
            ttl = TTL_SECONDS[ttl_name]
            self._entries[hashes[bp]] = _Entry(expires=now + ttl, ttl=ttl)

        return CacheUsage(
            input_tokens=total - read - written["5m"] - written["1h"],
            cache_read_input_tokens=read,
            ephemeral_5m_input_tokens=written["5m"],
            ephemeral_1h_input_tokens=written["1h"],
        )
