"""Request validation mirroring the real Messages API.

Errors raise :class:`~offline_claude.errors.ApiError`: 400 ``invalid_request_error``
with messages in the real API's ``path: problem`` style, or 404 ``not_found_error``
for a model id the offline model does not serve (``models.json``). Unknown top-level
fields are accepted (newer SDK features must not break the emulator). Per model, as
documented: a final ``assistant`` message (a prefill) is refused on Claude 4.6 and later
unless it continues a ``pause_turn`` (it ends in a server tool block); where a prefill is
accepted it must not end with whitespace; ``thinking.type`` and ``output_config.effort``
must be ones the model takes. A ``web_search_*`` tool definition and the server tool blocks
sent back in assistant turns are checked by :mod:`offline_claude.web_search`.
"""

from __future__ import annotations

import re
from typing import Any

from . import documents, web_search
from .errors import invalid
from .lineup import Model, get

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
MAX_CACHE_BREAKPOINTS = 4
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_NON_EMPTY = (
    "all messages must have non-empty content except for the optional final assistant message"
)
_BLOCK_TYPES = frozenset(
    {
        "text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "container_upload",
        "compaction",
    }
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_cache_control(block: dict[str, Any], path: str) -> int:
    """Validate ``block['cache_control']``; return 1 if present, else 0."""
    cc = block.get("cache_control")
    if cc is None:
        return 0
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
        raise invalid(f"{path}.cache_control.type: Input should be 'ephemeral'")
    if "ttl" in cc and cc["ttl"] not in ("5m", "1h"):
        raise invalid(f"{path}.cache_control.ttl: Input should be '5m' or '1h'")
    return 1


def _check_image(block: dict[str, Any], path: str) -> None:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid(f"{path}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") not in IMAGE_MEDIA_TYPES:
            allowed = ", ".join(f"'{m}'" for m in IMAGE_MEDIA_TYPES)
            raise invalid(f"{path}.source.base64.media_type: Input should be {allowed}")
        if not isinstance(source.get("data"), str) or not source["data"]:
            raise invalid(f"{path}.source.base64.data: Field required")
    elif kind == "url":
        if not isinstance(source.get("url"), str) or not source["url"]:
            raise invalid(f"{path}.source.url.url: Field required")
    elif kind != "file":
        raise invalid(
            f"{path}.source: Input tag {kind!r} found using 'type' does not match any of "
            "the expected tags: 'base64', 'url', 'file'"
        )


def _check_block(block: Any, path: str) -> int:
    """Validate one message content block; return its number of cache breakpoints."""
    if not isinstance(block, dict):
        raise invalid(f"{path}: Input should be a valid dictionary or object")
    kind = block.get("type")
    if kind not in _BLOCK_TYPES:
        raise invalid(
            f"{path}: Input tag {kind!r} found using 'type' does not match any of the expected tags"
        )
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise invalid(f"{path}.text: Field required")
        if not block["text"]:
            raise invalid(f"{path}.text: text content blocks must be non-empty")
    elif kind == "image":
        _check_image(block, path)
    elif kind == "document":
        documents.check_block(block, path)
    elif kind == "tool_use":
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            raise invalid(f"{path}: tool_use blocks require string `id` and `name`")
        if not isinstance(block.get("input"), dict):
            raise invalid(f"{path}.input: Input should be a valid dictionary")
    elif kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
        raise invalid(f"{path}.tool_use_id: Field required")
    elif kind == "compaction":
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            raise invalid(f"{path}.content: Input should be a valid string")
        if content == "":  # null marks a failed compaction; an empty summary is refused
            raise invalid(f"{path}.content: compaction content must be non-empty or null")
    return _check_cache_control(block, path)


def _tool_ids(content: Any, kind: str, key: str) -> list[str]:
    if not isinstance(content, list):
        return []
    return [str(b.get(key)) for b in content if isinstance(b, dict) and b.get("type") == kind]


def _check_messages(messages: Any) -> int:
    """Validate the ``messages`` list; return its number of cache breakpoints."""
    if messages is None:
        raise invalid("messages: Field required")
    if not isinstance(messages, list):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    breakpoints = 0
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        if not isinstance(message, dict):
            raise invalid(f"{path}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise invalid(f"{path}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise invalid('messages: first message must use the "user" role')
        content = message.get("content")
        if content is None:
            raise invalid(f"{path}.content: Field required")
        is_final_assistant = i == len(messages) - 1 and role == "assistant"
        if isinstance(content, str):
            if not content and not is_final_assistant:
                raise invalid(f"{path}: {_NON_EMPTY}")
        elif isinstance(content, list):
            if not content and not is_final_assistant:
                raise invalid(f"{path}: {_NON_EMPTY}")
            for j, block in enumerate(content):
                breakpoints += _check_block(block, f"{path}.content.{j}")
        else:
            raise invalid(f"{path}.content: Input should be a valid string or list")

    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        uses = _tool_ids(message["content"], "tool_use", "id")
        following = messages[i + 1]["content"] if i + 1 < len(messages) else None
        results = set(_tool_ids(following, "tool_result", "tool_use_id"))
        missing = [u for u in uses if u not in results]
        if missing and i + 1 < len(messages):
            raise invalid(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
    for i, message in enumerate(messages):
        if message["role"] != "user":
            continue
        results = _tool_ids(message["content"], "tool_result", "tool_use_id")
        previous = (
            messages[i - 1]["content"] if i > 0 and messages[i - 1]["role"] == "assistant" else None
        )
        uses = set(_tool_ids(previous, "tool_use", "id"))
        unexpected = [r for r in results if r not in uses]
        if unexpected:
            raise invalid(
                f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` "
                f"blocks: {', '.join(unexpected)}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message."
            )
    web_search.check_blocks(messages)
    return breakpoints


PREFILL_REFUSED = (
    "This model does not support assistant message prefill. The conversation must end with a "
    "user message."
)
EFFORTS = ("low", "medium", "high", "xhigh", "max")


def continues_pause_turn(message: dict[str, Any]) -> bool:
    """Whether a final assistant message sends back a turn paused in a server tool loop: its
    last block is a ``server_tool_use`` or a server tool's result (what a ``pause_turn``
    response ends with), not text of the model's to be continued."""
    content = message["content"]
    if not isinstance(content, list) or not content:
        return False
    kind = content[-1].get("type", "")
    return kind == "server_tool_use" or (kind.endswith("_tool_result") and kind != "tool_result")


def _check_prefill(messages: list[dict[str, Any]], model: Model) -> None:
    """A final assistant message: refused where prefill is removed (a pause_turn continuation
    excepted); else it must not end with whitespace."""
    final = messages[-1]
    if final["role"] != "assistant":
        return
    if not model.prefill and not continues_pause_turn(final):
        raise invalid(PREFILL_REFUSED)
    content = final["content"]
    last = content if isinstance(content, str) else (content[-1] if content else None)
    text = last.get("text") if isinstance(last, dict) and last.get("type") == "text" else last
    if isinstance(text, str) and text != text.rstrip():
        raise invalid("messages: final assistant content cannot end with trailing whitespace")


def _check_system(system: Any) -> int:
    if system is None or isinstance(system, str):
        return 0
    if not isinstance(system, list):
        raise invalid("system: Input should be a valid string or list")
    breakpoints = 0
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise invalid(f"system.{j}.type: Input should be 'text'")
        if not isinstance(block.get("text"), str) or not block["text"]:
            raise invalid(f"system.{j}.text: text content blocks must be non-empty")
        breakpoints += _check_cache_control(block, f"system.{j}")
    return breakpoints


def _check_tools(tools: Any, tool_choice: Any) -> int:
    breakpoints = 0
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("tools: Input should be a valid list")
        for j, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise invalid(f"tools.{j}: Input should be a valid dictionary")
            name = tool.get("name")
            if not isinstance(name, str) or not _TOOL_NAME_RE.match(name):
                raise invalid(
                    f"tools.{j}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
                )
            if name in names:
                raise invalid("tools: Tool names must be unique.")
            names.add(name)
            if web_search.is_web_search(tool):
                web_search.check_tool(tool, f"tools.{j}")
            elif tool.get("type") in (None, "custom") and not isinstance(
                tool.get("input_schema"), dict
            ):
                raise invalid(f"tools.{j}.custom.input_schema: Field required")
            breakpoints += _check_cache_control(tool, f"tools.{j}")
    if tool_choice is not None:
        if not isinstance(tool_choice, dict) or tool_choice.get("type") not in (
            "auto",
            "any",
            "tool",
            "none",
        ):
            raise invalid(
                "tool_choice: Input tag found using 'type' does not match any of the "
                "expected tags: 'auto', 'any', 'tool', 'none'"
            )
        if tool_choice["type"] == "tool":
            if not isinstance(tool_choice.get("name"), str):
                raise invalid("tool_choice.tool.name: Field required")
            if tool_choice["name"] not in names:
                raise invalid(
                    f"tool_choice.tool.name: Tool '{tool_choice['name']}' "
                    "not found in provided tools"
                )
    return breakpoints


def _check_sampling(body: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if temperature is not None and (not _is_number(temperature) or not 0 <= temperature <= 1):
        raise invalid("temperature: Input should be a number between 0 and 1")
    top_p = body.get("top_p")
    if top_p is not None and (not _is_number(top_p) or not 0 <= top_p <= 1):
        raise invalid("top_p: Input should be a number between 0 and 1")
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise invalid("top_k: Input should be a non-negative integer")
    stops = body.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise invalid("stop_sequences: Input should be a valid list of strings")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise invalid("metadata: Input should be a valid dictionary")
        user_id = metadata.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise invalid("metadata.user_id: Input should be a valid string")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise invalid("stream: Input should be a valid boolean")


_THINKING_HINT = {
    "adaptive": 'Use "thinking.type.enabled" with "budget_tokens" to control thinking.',
    "between_tools": 'Use "thinking.type.adaptive" or "thinking.type.disabled".',
}


def _check_thinking(body: dict[str, Any], model: Model, count_only: bool) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in (
        "enabled",
        "disabled",
        "adaptive",
        "between_tools",
    ):
        raise invalid(
            "thinking: Input tag found using 'type' does not match any of the expected "
            "tags: 'enabled', 'disabled', 'adaptive'"
        )
    kind = thinking["type"]
    if kind not in model.thinking_types:
        hint = _THINKING_HINT.get(
            kind,
            'Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.',
        )
        raise invalid(f'"thinking.type.{kind}" is not supported for this model. {hint}')
    display = thinking.get("display")
    if display is not None and display not in ("summarized", "omitted"):
        raise invalid("thinking.display: Input should be 'summarized' or 'omitted'")
    if kind != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if not _is_int(budget):
        raise invalid("thinking.enabled.budget_tokens: Field required")
    if budget < 1024:
        raise invalid(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        )
    if not count_only and budget >= body["max_tokens"]:
        raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`")


def _check_effort(body: dict[str, Any], model: Model) -> None:
    config = body.get("output_config")
    if config is None:
        return
    if not isinstance(config, dict):
        raise invalid("output_config: Input should be a valid dictionary")
    effort = config.get("effort")
    if effort is None:
        return
    if effort not in EFFORTS:
        raise invalid(
            "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
        )
    if effort not in model.efforts:
        if not model.efforts:
            raise invalid("output_config.effort: effort is not supported by this model")
        allowed = ", ".join(model.efforts)
        raise invalid(
            f"output_config.effort: {effort!r} is not supported by this model "
            f"(supported: {allowed})"
        )


def validate_messages_body(body: Any, *, count_only: bool = False) -> dict[str, Any]:
    """Validate a ``/v1/messages`` (or ``count_tokens`` when ``count_only``) body and return it.

    ``max_tokens`` is required unless ``count_only``.
    """
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object")
    model = get(body.get("model"))
    if not count_only:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise invalid("max_tokens: Field required")
        if not _is_int(max_tokens):
            raise invalid("max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise invalid("max_tokens: Input should be greater than or equal to 1")
    breakpoints = _check_messages(body.get("messages"))
    if not count_only:
        _check_prefill(body["messages"], model)
    breakpoints += _check_system(body.get("system"))
    breakpoints += _check_tools(body.get("tools"), body.get("tool_choice"))
    if breakpoints > MAX_CACHE_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be "
            f"provided. Found {breakpoints}."
        )
    _check_sampling(body)
    _check_thinking(body, model, count_only)
    _check_effort(body, model)
    return body
