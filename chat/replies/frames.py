"""The frames a tab sends over the chat socket, parsed and checked, and the error and notice
frames the socket sends back (docs/protocol.md).

Each check raises InvalidFrame, which becomes an `invalid_frame` error frame; the socket stays
open. Whether the user may do what a frame asks is checked by the services it goes to.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from django.conf import settings

from chat.claude import catalogue
from chat.errors import UserFacingError
from chat.replies.planning import TurnPlan
from chat.text import has_unstorable


class InvalidFrame(UserFacingError):
    code = "invalid_frame"


@dataclass
class Send:
    client_id: uuid.UUID
    text: str
    model: str | None
    attachment_ids: list


def parse(text_data: str | None) -> dict:
    if text_data is None:
        raise InvalidFrame("Frames must be JSON text.")
    if len(text_data) > settings.MESSAGE_MAX_CHARS * 6 + 10_000:  # \uXXXX escapes included
        raise InvalidFrame("The frame is too large.")
    try:
        frame = json.loads(text_data)
    except (ValueError, RecursionError):
        raise InvalidFrame("Frames must be JSON text (not nested that deep).") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise InvalidFrame('A frame is a JSON object with a "type".')
    return frame


def send(frame: dict) -> Send:
    raw_id = frame.get("client_id")
    if not isinstance(raw_id, str):
        raise InvalidFrame("send needs a client_id (a UUID string).")
    try:
        client_id = uuid.UUID(raw_id)
    except ValueError:
        raise InvalidFrame("client_id must be a UUID.") from None
    checked = text(frame)
    attachments = frame.get("attachments", [])
    if not isinstance(attachments, list):
        raise InvalidFrame("attachments must be a list of ids.")
    return Send(client_id, checked, model(frame), attachments)


def text(frame: dict) -> str:
    text = frame.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InvalidFrame("send needs some text.")
    if has_unstorable(text):  # typed text is refused, never changed (chat/text.py)
        raise InvalidFrame(
            "The text holds characters that cannot be stored (NUL or a lone surrogate)."
        )
    if len(text) > settings.MESSAGE_MAX_CHARS:
        raise InvalidFrame(
            f"The message is too long: {len(text):,} characters, "
            f"the limit is {settings.MESSAGE_MAX_CHARS:,}."
        )
    return text


def model(frame: dict) -> str | None:
    model = frame.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise InvalidFrame("model must be a string.")
        try:
            catalogue.get_model(model)
        except catalogue.UnknownModel:
            raise InvalidFrame(f"Unknown model {model[:60]!r}.") from None
    return model


def effort(frame: dict) -> str | None:
    """The send's `effort`, if any: one of the API's levels (whether the model takes it is
    checked with the conversation, when the turn starts)."""
    effort = frame.get("effort")
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in catalogue.EFFORT_LEVELS:
        raise InvalidFrame(f"effort must be one of {', '.join(catalogue.EFFORT_LEVELS)}.")
    return effort


def web_search(frame: dict) -> bool | None:
    """The send's `web_search`, if any: this turn's choice over the conversation's toggle."""
    value = frame.get("web_search")
    if value is not None and not isinstance(value, bool):
        raise InvalidFrame("web_search must be true or false.")
    return value


def message_id(frame: dict, *, refused: str) -> int:
    message_id = frame.get("message_id")
    if isinstance(message_id, bool) or not isinstance(message_id, int):
        raise InvalidFrame(refused)
    return message_id


def after_seq(frame: dict) -> int:
    after_seq = frame.get("after_seq", 0)
    if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
        raise InvalidFrame("after_seq must be a whole number ≥ 0.")
    return after_seq


class ConversationGone(UserFacingError):
    code = "not_found"
    message = "This conversation no longer exists."


class ServerFault(UserFacingError):
    code = "internal_error"
    message = "Something went wrong on the server; try again."
    retryable = True


def error(exc: UserFacingError) -> dict:
    """The `error` frame of a refusal before a reply starts (no message_id)."""
    return {
        "type": "error",
        "code": exc.code,
        "message": exc.message,
        "retryable": exc.retryable,
        "message_id": None,
    }


def model_replaced(plan: TurnPlan) -> dict:
    """The `notice` that a retired model was replaced, sent to every tab before the reply."""
    label = catalogue.get_model(plan.model).label
    return {
        "type": "notice",
        "code": "model_replaced",
        "message": f"{plan.replaced_model} is no longer available to you; this conversation "
        f"now uses {label}.",
        "model": plan.model,
        "previous_model": plan.replaced_model,
    }
