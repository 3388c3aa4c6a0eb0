"""The models the offline Claude serves, read from ``models.json`` beside this module.

It plays the API, not the app: each row says what the API documents for that model — its
limits (``max_input_tokens``, ``max_tokens``, as ``GET /v1/models`` reports them), which
``thinking.type`` values it accepts, whether it thinks when the request sets no ``thinking``,
which ``output_config.effort`` levels it takes, what a thinking block shows by default, whether
a final assistant message (a prefill) is accepted, whether returned thinking blocks are
bound to the model and the exact earlier prefix ("preserved thinking"), and whether it takes
server-side compaction (``compaction``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .errors import ApiError, invalid

TABLE = Path(__file__).with_name("models.json")


@dataclass(frozen=True)
class Model:
    id: str
    display_name: str
    created_at: str
    max_input_tokens: int
    max_tokens: int
    thinking: str  # manual | manual+adaptive | adaptive | always
    thinks_by_default: bool
    thinking_types: tuple[str, ...]
    efforts: tuple[str, ...]
    display_default: str
    prefill: bool
    preserved_thinking: bool
    reads_thinking_of: tuple[str, ...]
    compaction: bool = False  # takes the context_management edit compact_20260112

    def info(self) -> dict[str, Any]:
        """The Models API object."""
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
            "max_input_tokens": self.max_input_tokens,
            "max_tokens": self.max_tokens,
        }

    def reads(self, producer: str) -> bool:
        """Whether this model can use a thinking block that ``producer`` wrote."""
        return producer == self.id or producer in self.reads_thinking_of


@cache
def models() -> dict[str, Model]:
    """The table, in its order (newest first)."""
    rows = json.loads(TABLE.read_text(encoding="utf-8"))["models"]
    return {
        row["id"]: Model(
            **{
                **row,
                "thinking_types": tuple(row["thinking_types"]),
                "efforts": tuple(row["efforts"]),
                "reads_thinking_of": tuple(row["reads_thinking_of"]),
            }
        )
        for row in rows
    }


def get(model_id: Any) -> Model:
    """The model named by a request (400 if ``model`` is not a string, 404 if it is unknown)."""
    if model_id is None:
        raise invalid("model: Field required")
    if not isinstance(model_id, str):
        raise invalid("model: Input should be a valid string")
    try:
        return models()[model_id]
    except KeyError:
        raise ApiError(404, f"model: {model_id}", error_type="not_found_error") from None


def page(query: dict[str, str]) -> dict[str, Any]:
    """``GET /v1/models``: newest first, cursor pagination by ``after_id`` / ``before_id``.

    ``limit`` defaults to 20 (1..1000); ``has_more`` says whether more results lie in the
    requested direction; ``first_id`` / ``last_id`` are the page's ends (null when empty).
    """
    rows = list(models().values())
    raw_limit = query.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise invalid("limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise invalid("limit: Input should be between 1 and 1000")
    ids = [m.id for m in rows]
    if "before_id" in query:
        end = ids.index(query["before_id"]) if query["before_id"] in ids else 0
        start = max(0, end - limit)
        chosen, has_more = rows[start:end], start > 0
    else:
        after = query.get("after_id")
        start = ids.index(after) + 1 if after in ids else 0
        chosen = rows[start : start + limit]
        has_more = start + limit < len(rows)
    data = [m.info() for m in chosen]
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
