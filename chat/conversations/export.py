"""Export a conversation (Markdown, or JSON in the Messages API's shape); check such JSON to import.

The JSON is what a Messages API request body would carry: `{"model", "system", "messages":
[{"role", "content": [blocks]}]}` for the active branch, plus the conversation's `title` (ours,
not the API's: drop it before sending the body to the API), so an import keeps it. Images are
exported as a text placeholder (their bytes stay in our storage); tool_use / tool_result blocks
are kept.
"""

from __future__ import annotations

import json

from chat.claude import catalogue, context, request_body
from chat.conversations import tree
from chat.models import Conversation

# Below Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB), which caps a JSON request body.
IMPORT_MAX_BYTES = 2 * 1024 * 1024


IMPORT_MAX_MESSAGES = 5000


IMPORT_MAX_SYSTEM_CHARS = 100_000


TOP_LEVEL_KEYS = {"model", "system", "messages", "title"}


BLOCK_KEYS = {
    "text": ({"type", "text"}, {"citations"}),
    "tool_use": ({"type", "id", "name", "input"}, set()),
    "tool_result": ({"type", "tool_use_id"}, {"content", "is_error"}),
}


def _image_placeholder(block: dict) -> dict:
    size = f" {block['width']}×{block['height']}" if block.get("width") else ""
    return {"type": "text", "text": f"[image{size} not included in the export]"}


def export_data(conversation: Conversation) -> dict:
    """The active branch as a Messages API request body (without max_tokens), and the title."""
    path = tree.active_path(conversation)
    turns = [
        context.StoredTurn(id=m.pk, role=m.role, content=m.content, token_count=m.token_count)
        for m in path.messages
    ]
    messages = request_body.to_api_messages(turns, _image_placeholder)
    for message in messages:
        message["content"] = [_api_block(b) for b in message["content"] if _exportable(b)]
    prompt = conversation.system_prompt
    return {
        "model": conversation.model,
        "title": conversation.title,
        "system": prompt.text if prompt else "",
        "messages": [m for m in messages if m["content"]],
    }


def _exportable(block: dict) -> bool:
    return block.get("type") in BLOCK_KEYS


def _api_block(block: dict) -> dict:
    required, optional = BLOCK_KEYS[block["type"]]
    return {k: v for k, v in block.items() if k in required | optional}


def export_markdown(conversation: Conversation) -> str:
    path = tree.active_path(conversation)
    lines = [f"# {conversation.display_title}", "", f"Model: `{conversation.model}`", ""]
    for message in path.messages:
        lines.append("## You" if message.role == "user" else "## Assistant")
        lines.append("")
        for block in message.content:
            kind = block.get("type")
            if kind == "text" and block.get("text"):
                lines += [block["text"], ""]
            elif kind == "image":
                lines += [_image_placeholder(block)["text"], ""]
            elif kind == "tool_use":
                data = json.dumps(block.get("input", {}), ensure_ascii=False, indent=2)
                lines += [
                    f"**Tool call** `{block.get('name', '')}`:",
                    "",
                    "```json",
                    data,
                    "```",
                    "",
                ]
            elif kind == "tool_result":
                result = block.get("content", "")
                if not isinstance(result, str):
                    result = json.dumps(result, ensure_ascii=False, indent=2)
                label = "**Tool error:**" if block.get("is_error") else "**Tool result:**"
                lines += [label, "", "```", result, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


class ImportError_(ValueError):
    """The upload is not a conversation export; the message says why, for the user."""


def _check_block(block: object, where: str, role: str) -> dict:
    if not isinstance(block, dict) or block.get("type") not in BLOCK_KEYS:
        raise ImportError_(f"{where}: a block is an object of type text, tool_use or tool_result.")
    required, optional = BLOCK_KEYS[block["type"]]
    keys = set(block)
    if not required <= keys or keys - required - optional:
        raise ImportError_(
            f"{where}: a {block['type']} block has keys {', '.join(sorted(required))}."
        )
    kind = block["type"]
    if kind == "text" and not (isinstance(block["text"], str) and block["text"]):
        raise ImportError_(f"{where}: text must be a non-empty string.")
    if kind == "tool_use":
        if role != "assistant":
            raise ImportError_(f"{where}: tool_use blocks belong to assistant messages.")
        if not (isinstance(block["id"], str) and isinstance(block["name"], str)):
            raise ImportError_(f"{where}: tool_use id and name are strings.")
        if not isinstance(block["input"], dict):
            raise ImportError_(f"{where}: tool_use input is an object.")
    if kind == "tool_result":
        if role != "user":
            raise ImportError_(f"{where}: tool_result blocks belong to user messages.")
        if not isinstance(block["tool_use_id"], str):
            raise ImportError_(f"{where}: tool_use_id is a string.")
        content = block.get("content", "")
        if not isinstance(content, (str, list)):
            raise ImportError_(f"{where}: tool_result content is a string or a list of blocks.")
        if "is_error" in block and not isinstance(block["is_error"], bool):
            raise ImportError_(f"{where}: is_error is true or false.")
    return {k: block[k] for k in keys}


def parse_import(raw: bytes) -> dict:
    """Validate an export strictly: {model, system, messages, title}. Raises ImportError_."""
    if len(raw) > IMPORT_MAX_BYTES:
        raise ImportError_(f"The file is larger than {IMPORT_MAX_BYTES // (1024 * 1024)} MB.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ImportError_("The file is not JSON (UTF-8).") from None
    if not isinstance(data, dict):
        raise ImportError_('The file must be a JSON object with "model" and "messages".')
    unknown = set(data) - TOP_LEVEL_KEYS
    if unknown:
        raise ImportError_(f"Unknown keys: {', '.join(sorted(unknown))}.")
    model = _check_model(data.get("model"))
    system = _check_system(data.get("system", ""))
    title = data.get("title", "")
    if not isinstance(title, str):
        raise ImportError_('"title" is a string.')
    messages = _check_messages(data.get("messages"))
    return {
        "model": model,
        "system": system,
        "messages": messages,
        "title": " ".join(title.split())[:200],
    }


def _check_model(model: object) -> str:
    """A model id of the catalogue. Raises ImportError_."""
    if not isinstance(model, str):
        raise ImportError_('"model" is a model id.')
    try:
        catalogue.get_model(model)
    except catalogue.UnknownModel:
        raise ImportError_(f'The model "{model[:100]}" is not one this site offers.') from None
    return model


def _check_system(system: object) -> str:
    """The system prompt: a string, or the texts of a list of text blocks. Raises ImportError_."""
    if isinstance(system, list):  # system blocks: their texts
        if not all(
            isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
            for b in system
        ):
            raise ImportError_('"system" is a string or a list of text blocks.')
        system = "\n\n".join(b["text"] for b in system)
    if not isinstance(system, str) or len(system) > IMPORT_MAX_SYSTEM_CHARS:
        raise ImportError_(
            f'"system" is a string of at most {IMPORT_MAX_SYSTEM_CHARS:,} characters.'
        )
    return system


def _check_messages(messages: object) -> list[dict]:
    """The messages, alternating from the user, their blocks checked. Raises ImportError_."""
    if not isinstance(messages, list) or not messages:
        raise ImportError_('"messages" is a non-empty list.')
    if len(messages) > IMPORT_MAX_MESSAGES:
        raise ImportError_(f"At most {IMPORT_MAX_MESSAGES:,} messages can be imported.")
    checked = []
    for index, message in enumerate(messages, 1):
        where = f"Message {index}"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ImportError_(f'{where}: an object with "role" and "content" only.')
        role = message["role"]
        if role not in ("user", "assistant"):
            raise ImportError_(f'{where}: role is "user" or "assistant".')
        expected = "user" if index % 2 else "assistant"
        if role != expected:
            raise ImportError_(f"{where}: messages alternate, starting with the user.")
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}] if content else []
        if not isinstance(content, list) or not content:
            raise ImportError_(f"{where}: content is a non-empty string or list of blocks.")
        checked.append({"role": role, "content": [_check_block(b, where, role) for b in content]})
    return checked
