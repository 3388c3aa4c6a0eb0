"""The web search server tool, as Claude's documentation describes it (web search tool and
server tools pages).

* The tool: ``{"type": "web_search_20250305" | "web_search_20260209" | "web_search_20260318",
  "name": "web_search"}`` with optional ``max_uses`` (> 0), ``allowed_domains`` *or*
  ``blocked_domains`` (both: 400), ``user_location`` (``approximate``), ``allowed_callers``,
  and on ``_20260318`` ``response_inclusion``. Any other ``web_search_*`` type is a 400.
* A reply that searches holds, per search, a ``server_tool_use`` block (``srvtoolu_…``,
  ``input: {"query": …}``) followed by its ``web_search_tool_result``: a list of
  ``web_search_result`` items (``url``, ``title``, ``encrypted_content``, ``page_age``) or one
  ``web_search_tool_result_error`` object; then text blocks citing the results with
  ``web_search_result_location`` citations. Results are deterministic pages under the
  reserved example domains (RFC 2606), or under the allowed domains when those are given.
* ``encrypted_content`` and ``encrypted_index`` are opaque tokens carrying an HMAC under a
  per-process secret: sent back missing or modified, the request is refused (400).
* The offline model always calls the tool directly (as with ``allowed_callers: ["direct"]``):
  it emulates no dynamic filtering.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from .directives import Directives
from .errors import invalid, new_id
from .replies import Conversation, PlannedBlock, ReplyPlan, Turn, chunk_text

VERSIONS = ("web_search_20250305", "web_search_20260209", "web_search_20260318")
ERROR_CODES = (
    "too_many_requests",
    "invalid_tool_input",
    "max_uses_exceeded",
    "query_too_long",
    "request_too_large",
    "unavailable",
)
# The domains searched when the tool names no allowed domains: reserved for examples.
POOL = ("example.org", "docs.example.org", "news.example.net", "example.com")
RESULTS_PER_SEARCH = 3
CITED_TEXT_MAX = 150
CALLERS = ("direct", "code_execution_20260120")

_SECRET = secrets.token_bytes(32)
_MAC_BYTES = 16
_FIELDS = frozenset(
    {
        "type",
        "name",
        "max_uses",
        "allowed_domains",
        "blocked_domains",
        "user_location",
        "cache_control",
        "allowed_callers",
        "defer_loading",
        "strict",
    }
)
_LOCATION_FIELDS = ("city", "region", "country", "timezone")
_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$", re.I)
_CURRENT_RE = re.compile(
    r"\b(latest|news|recent(?:ly)?|current(?:ly)?|search the web|look (?:it )?up|search for)\b",
    re.I,
)
_WORD_RE = re.compile(r"[A-Za-z0-9]+")
_JSON_CHUNK = 12
_LABELS = ("overview", "latest update", "background")


# ---------------------------------------------------------------------------------------------
# The tool definition


def is_web_search(tool: Any) -> bool:
    """Whether a ``tools`` entry is (meant to be) the web search tool: its type says so."""
    return isinstance(tool, dict) and str(tool.get("type") or "").startswith("web_search")


def offered(body: dict[str, Any]) -> dict[str, Any] | None:
    """The request's web search tool definition, or ``None``."""
    return next((t for t in body.get("tools") or [] if is_web_search(t)), None)


def check_tool(tool: dict[str, Any], path: str) -> None:
    """Refuse a web search tool definition the API refuses (400)."""
    kind = tool.get("type")
    if kind not in VERSIONS:
        expected = ", ".join(f"'{v}'" for v in VERSIONS)
        raise invalid(
            f"{path}: Input tag {kind!r} found using 'type' does not match any of the expected "
            f"tags: {expected}"
        )
    where = f"{path}.{kind}"
    known = _FIELDS | ({"response_inclusion"} if kind >= "web_search_20260318" else set())
    for key in tool:
        if key not in known:
            raise invalid(f"{where}.{key}: Extra inputs are not permitted")
    if tool.get("name") != "web_search":
        raise invalid(f"{where}.name: Input should be 'web_search'")
    _check_max_uses(tool.get("max_uses"), where)
    allowed, blocked = tool.get("allowed_domains"), tool.get("blocked_domains")
    if allowed is not None and blocked is not None:
        raise invalid(
            f"{where}: Cannot specify both allowed_domains and blocked_domains in the same request"
        )
    for key in ("allowed_domains", "blocked_domains"):
        _check_domains(tool.get(key), f"{where}.{key}")
    _check_location(tool.get("user_location"), f"{where}.user_location")
    callers = tool.get("allowed_callers")
    if callers is not None and (
        not isinstance(callers, list) or not callers or any(c not in CALLERS for c in callers)
    ):
        allowed_callers = " or ".join(f"'{c}'" for c in CALLERS)
        raise invalid(f"{where}.allowed_callers: each entry should be {allowed_callers}")
    inclusion = tool.get("response_inclusion")
    if inclusion is not None and inclusion not in ("full", "excluded"):
        raise invalid(f"{where}.response_inclusion: Input should be 'full' or 'excluded'")


def _check_max_uses(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(f"{where}.max_uses: Input should be a valid integer")
    if value < 1:
        raise invalid(f"{where}.max_uses: Input should be greater than 0")


def _check_domains(entries: Any, where: str) -> None:
    """Bare domains with an optional path; ``*`` only in the path."""
    if entries is None:
        return
    if not isinstance(entries, list):
        raise invalid(f"{where}: Input should be a valid list")
    for k, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise invalid(f"{where}.{k}: Input should be a valid string")
        host, _, rest = entry.partition("/")
        if "://" in entry or not entry.isascii() or not _HOST_RE.match(host):
            raise invalid(
                f"{where}.{k}: Invalid domain {entry!r}: give a bare domain with an optional "
                "path, without a scheme (for example `example.com` or `example.com/blog`)"
            )
        if rest.count("*") > 1:
            raise invalid(f"{where}.{k}: Invalid domain {entry!r}: at most one `*` is allowed")


def _check_location(location: Any, where: str) -> None:
    if location is None:
        return
    if not isinstance(location, dict):
        raise invalid(f"{where}: Input should be a valid dictionary")
    if location.get("type") != "approximate":
        raise invalid(f"{where}.type: Input should be 'approximate'")
    for key in location:
        if key != "type" and key not in _LOCATION_FIELDS:
            raise invalid(f"{where}.{key}: Extra inputs are not permitted")
    given = {k: location[k] for k in _LOCATION_FIELDS if location.get(k) is not None}
    if not given:
        raise invalid(f"{where}: provide at least one of city, region, country or timezone")
    for key, value in given.items():
        if not isinstance(value, str) or not value:
            raise invalid(f"{where}.{key}: Input should be a non-empty string")
    country = given.get("country")
    if country is not None and not re.fullmatch(r"[A-Z]{2}", country):
        raise invalid(
            f"{where}.country: {country!r} is not a supported two-letter ISO 3166-1 country code"
        )


# ---------------------------------------------------------------------------------------------
# Blocks sent back in assistant turns


def _mac(*parts: str) -> bytes:
    return hmac.new(_SECRET, "\0".join(parts).encode(), hashlib.sha256).digest()[:_MAC_BYTES]


def _keystream(nonce: bytes, size: int) -> bytes:
    blocks = (
        hmac.new(_SECRET, nonce + n.to_bytes(4, "big"), hashlib.sha256).digest()
        for n in range(size // 32 + 1)
    )
    return b"".join(blocks)[:size]


def _seal(payload: dict[str, str]) -> str:
    """An opaque token for ``payload``: its MAC, then the payload masked with a keystream
    derived from that MAC (readable only by this process, and tamper-evident)."""
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    mac = _mac(raw.decode())
    masked = bytes(a ^ b for a, b in zip(raw, _keystream(mac, len(raw)), strict=True))
    return base64.b64encode(mac + masked).decode()


def unseal(token: Any) -> dict[str, str] | None:
    """The payload of an ``encrypted_content`` token, or ``None`` if it is not one of ours."""
    if not isinstance(token, str):
        return None
    try:
        sealed = base64.b64decode(token.encode(), validate=True)
        mac, masked = sealed[:_MAC_BYTES], sealed[_MAC_BYTES:]
        raw = bytes(a ^ b for a, b in zip(masked, _keystream(mac, len(masked)), strict=True))
        if not hmac.compare_digest(mac, _mac(raw.decode())):
            return None
        payload = json.loads(raw)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _check_result_item(item: Any, path: str) -> None:
    if not isinstance(item, dict) or item.get("type") != "web_search_result":
        raise invalid(f"{path}.type: Input should be 'web_search_result'")
    for key in ("url", "title"):
        if not isinstance(item.get(key), str):
            raise invalid(f"{path}.{key}: Field required")
    if item.get("page_age") is not None and not isinstance(item["page_age"], str):
        raise invalid(f"{path}.page_age: Input should be a valid string")
    payload = unseal(item.get("encrypted_content"))
    sealed = (payload or {}).get("url"), (payload or {}).get("title")
    if sealed != (item["url"], item["title"]):
        raise invalid(
            f"{path}.encrypted_content: Invalid `encrypted_content` in `web_search_result` "
            "block: send search results back exactly as you received them."
        )


def _check_result(block: dict[str, Any], path: str) -> None:
    if not isinstance(block.get("tool_use_id"), str):
        raise invalid(f"{path}.tool_use_id: Field required")
    content = block.get("content")
    if isinstance(content, dict):
        if content.get("type") != "web_search_tool_result_error":
            raise invalid(f"{path}.content.type: Input should be 'web_search_tool_result_error'")
        if content.get("error_code") not in ERROR_CODES:
            codes = ", ".join(f"'{c}'" for c in ERROR_CODES)
            raise invalid(f"{path}.content.error_code: Input should be {codes}")
        return
    if not isinstance(content, list):
        raise invalid(f"{path}.content: Input should be a valid list or an error object")
    for k, item in enumerate(content):
        _check_result_item(item, f"{path}.content.{k}")


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _only_tool_results(message: dict[str, Any]) -> bool:
    blocks = _blocks(message)
    return bool(blocks) and all(b.get("type") == "tool_result" for b in blocks)


def check_blocks(messages: list[dict[str, Any]]) -> None:
    """Refuse server tool blocks the API refuses: malformed, modified results, a
    ``server_tool_use`` left without its result (except where the docs say it may be: last in
    a paused turn sent back, or beside client ``tool_use`` answered by the next message), a
    result without its call."""
    calls: dict[str, tuple[int, str]] = {}
    answered: set[str] = set()
    for i, message in enumerate(messages):
        for j, block in enumerate(_blocks(message)):
            path = f"messages.{i}.content.{j}"
            kind = block.get("type")
            if kind == "server_tool_use":
                if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                    raise invalid(f"{path}: server_tool_use blocks require string `id` and `name`")
                if not isinstance(block.get("input"), dict):
                    raise invalid(f"{path}.input: Input should be a valid dictionary")
                calls[block["id"]] = (i, block["name"])
            elif kind == "web_search_tool_result":
                _check_result(block, path)
                if block["tool_use_id"] not in calls:
                    raise invalid(
                        f"{path}: `web_search_tool_result` block with tool_use_id "
                        f"`{block['tool_use_id']}` does not follow a `server_tool_use` block "
                        "with that id"
                    )
                answered.add(block["tool_use_id"])
    last = len(messages) - 1
    for call_id, (i, name) in calls.items():
        if call_id in answered or i == last:
            continue
        deferred = (
            i == last - 1
            and any(b.get("type") == "tool_use" for b in _blocks(messages[i]))
            and _only_tool_results(messages[last])
        )
        if not deferred:
            raise invalid(
                f"messages.{i}: `{name}` tool use with id `{call_id}` was found without a "
                f"corresponding `{name}_tool_result` block"
            )


# ---------------------------------------------------------------------------------------------
# Replies that search


@dataclass
class SearchResultBlock(PlannedBlock):
    """A ``web_search_tool_result``: complete in its ``content_block_start``, no deltas."""

    content: Any = field(default_factory=list)

    def final(self) -> dict[str, Any]:
        return {"type": self.type, "tool_use_id": self.tool_id, "content": self.content}

    def start(self) -> dict[str, Any]:
        return self.final()


@dataclass
class CitedTextBlock(PlannedBlock):
    """A text block citing one search result; streamed as a ``citations_delta`` then its text."""

    citation: dict[str, Any] = field(default_factory=dict)

    def final(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text, "citations": [self.citation]}

    @property
    def streamed_chunks(self) -> list[Any]:
        return [self.citation, *self.chunks]

    def delta(self, chunk: Any) -> dict[str, Any]:
        if isinstance(chunk, dict):
            return {"type": "citations_delta", "citation": chunk}
        return super().delta(chunk)


def searches_wanted(conv: Conversation, directives: Directives) -> int:
    """How many searches the first round of this turn makes (0: it does not search)."""
    tool = offered(conv.body)
    choice = conv.body.get("tool_choice") or {"type": "auto"}
    if tool is None or choice.get("type") == "none":
        return 0
    if directives.search is not None:
        return directives.search
    forced = choice.get("type") == "tool" and choice.get("name") == tool.get("name")
    return 1 if forced or _CURRENT_RE.search(conv.user_text) else 0


def queries(user_text: str, count: int) -> list[str]:
    """``count`` deterministic queries made from the user's words."""
    words = [w.lower() for w in _WORD_RE.findall(user_text)][:8]
    base = " ".join(words) or "offline"
    extra = ("", " details", " background")
    return [base + (extra[k] if k < len(extra) else f" {k + 1}") for k in range(count)]


def _matches(url_host: str, url_path: str, entry: str) -> bool:
    host, slash, path = entry.lower().partition("/")
    on_host = url_host == host or url_host.endswith("." + host)
    return on_host and (not slash or fnmatch.fnmatchcase(url_path, f"/{path}*"))


def _slug(query: str) -> str:
    return "-".join(_WORD_RE.findall(query.lower()))[:48] or "offline"


def _places(tool: dict[str, Any], query: str, number: int) -> list[tuple[str, str]]:
    """(host, path) of the results of search ``number``: under the allowed domains when
    given, else the example domains minus the blocked ones."""
    allowed = tool.get("allowed_domains")
    slug = f"{_slug(query)}-{number}"
    if allowed:
        places = []
        for entry in allowed:
            host, slash, path = entry.lower().partition("/")
            prefix = "/" + path.replace("*", "offline").rstrip("/") if slash else ""
            places.append((host, f"{prefix}/{slug}"))
        return places
    blocked = tool.get("blocked_domains") or []
    candidates = [(host, f"/offline/{slug}") for host in POOL]
    return [(h, p) for h, p in candidates if not any(_matches(h, p, b) for b in blocked)]


def _page_age(url: str) -> str:
    day = int(hashlib.sha256(url.encode()).hexdigest(), 16) % 28 + 1
    return f"November {day}, 2026"


def results(tool: dict[str, Any], query: str, number: int) -> list[dict[str, Any]]:
    """The deterministic results of search ``number`` (from 1) for ``query``."""
    places = _places(tool, query, number)
    start = (number - 1) % len(places) if places else 0
    chosen = (places[start:] + places[:start])[:RESULTS_PER_SEARCH]
    items = []
    for i, (host, path) in enumerate(chosen):
        url = f"https://{host}{path}-{i + 1}"
        title = f"{query.capitalize()}: {_LABELS[i % len(_LABELS)]} ({host})"
        age = _page_age(url)
        text = f"{host} wrote about {query} on {age}: an offline page, the same for every search."
        items.append(
            {
                "type": "web_search_result",
                "url": url,
                "title": title,
                "encrypted_content": _seal({"url": url, "title": title, "text": text}),
                "page_age": age,
            }
        )
    return items


def _server_tool_use(tool: dict[str, Any], query: str) -> PlannedBlock:
    payload = {"query": query}
    encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    json_chunks = [encoded[i : i + _JSON_CHUNK] for i in range(0, len(encoded), _JSON_CHUNK)]
    return PlannedBlock(
        "server_tool_use",
        ["", *json_chunks],
        tool_id=new_id("srvtoolu_"),
        tool_name=str(tool.get("name")),
        tool_input=payload,
    )


def result_block(
    tool: dict[str, Any] | None, call_id: str, query: str, number: int, error: str | None
) -> SearchResultBlock:
    """The result of search ``number`` of a request: an error object or the result list."""
    max_uses = tool.get("max_uses") if tool is not None else None
    if max_uses is not None and number > max_uses:
        error = "max_uses_exceeded"
    if error is not None:
        content: Any = {"type": "web_search_tool_result_error", "error_code": error}
    else:
        content = results(tool, query, number) if tool is not None else []
    return SearchResultBlock("web_search_tool_result", [], tool_id=call_id, content=content)


def _citation(item: dict[str, Any], text: str) -> dict[str, Any]:
    index = base64.b64encode(_mac("index", item["url"], text)).decode()
    return {
        "type": "web_search_result_location",
        "url": item["url"],
        "title": item["title"],
        "encrypted_index": index,
        "cited_text": text[:CITED_TEXT_MAX],
    }


def answer_blocks(found: list[SearchResultBlock | dict[str, Any]]) -> list[PlannedBlock]:
    """The text after the searches: one sentence citing each search's first result."""
    cited: list[tuple[dict[str, Any], str]] = []
    errors: list[str] = []
    for block in found:
        content = block.content if isinstance(block, SearchResultBlock) else block.get("content")
        if isinstance(content, dict):
            errors.append(str(content.get("error_code")))
        elif content:
            payload = unseal(content[0].get("encrypted_content")) or {}
            cited.append((content[0], str(payload.get("text", ""))))
    if not cited:
        codes = ", ".join(f"`{c}`" for c in errors) or "no results"
        text = f"The web search brought nothing I can cite ({codes}), so I have no sources to give."
        return [PlannedBlock("text", chunk_text(text))]
    blocks = [PlannedBlock("text", chunk_text("Here is what I found on the web:\n\n"))]
    for n, (item, text) in enumerate(cited):
        if n:
            blocks.append(PlannedBlock("text", ["\n\n"]))
        blocks.append(CitedTextBlock("text", chunk_text(text), citation=_citation(item, text)))
    if errors:
        note = f"\n\nSome searches failed ({', '.join(f'`{c}`' for c in errors)})."
        blocks.append(PlannedBlock("text", chunk_text(note)))
    return blocks


def resumes_paused_search(messages: list[dict[str, Any]]) -> bool:
    """Whether the request sends back a turn paused after its searches (see :func:`plan`)."""
    return _sent_back_results(messages) is not None


def _sent_back_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The search results of a paused turn sent back (a final assistant message ending with
    a ``web_search_tool_result``), else ``None``."""
    final = messages[-1]
    blocks = _blocks(final) if final.get("role") == "assistant" else []
    if not blocks or blocks[-1].get("type") != "web_search_tool_result":
        return None
    return [b for b in blocks if b.get("type") == "web_search_tool_result"]


def plan(conv: Conversation, directives: Directives, turn: Turn) -> ReplyPlan | None:
    """The reply when this round searches or finishes a paused search turn, else ``None``.

    First round: a short text, then per search its ``server_tool_use`` and result, then the
    cited answer (``stop_reason: "end_turn"``) — or, with ``search_pause``, the searches alone
    with ``stop_reason: "pause_turn"``. A paused turn sent back: the cited answer.
    """
    sent_back = _sent_back_results(conv.body["messages"])
    if sent_back is not None:
        return ReplyPlan(answer_blocks(list(sent_back)))
    tool = offered(conv.body)
    count = searches_wanted(conv, directives) if turn.first_round else 0
    if tool is None or count == 0:
        return None
    blocks: list[PlannedBlock] = [PlannedBlock("text", chunk_text("I'll search the web for that."))]
    found: list[SearchResultBlock | dict[str, Any]] = []
    for number, query in enumerate(queries(conv.user_text, count), start=1):
        call = _server_tool_use(tool, query)
        result = result_block(tool, call.tool_id, query, number, directives.search_error)
        blocks += [call, result]
        found.append(result)
    if directives.search_pause:
        return ReplyPlan(blocks, "pause_turn")
    return ReplyPlan(blocks + answer_blocks(found))


def pending_result(body: dict[str, Any], call_id: str) -> SearchResultBlock:
    """The result of the search a paused turn ended with, run at the start of the next request."""
    call = next(b for b in _blocks(body["messages"][-1]) if b.get("id") == call_id)
    query = str((call.get("input") or {}).get("query") or "offline")
    return result_block(offered(body), call_id, query, 1, None)  # this request's first search


def requests_made(plan_: ReplyPlan) -> int:
    """Searches run by this response (``usage.server_tool_use.web_search_requests``): a failed
    search is not billed, an empty result list is."""
    return sum(
        1 for b in plan_.blocks if isinstance(b, SearchResultBlock) and isinstance(b.content, list)
    )
