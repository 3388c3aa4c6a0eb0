"""The model catalogue: ids, context window, max output and prices per MTok, read from data.

The file is settings.CLAUDE_MODEL_CATALOGUE (JSON); editing it needs no code change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

from django.conf import settings

MTOK = Decimal(1_000_000)


class UnknownModel(LookupError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    id: str
    label: str
    context_window: int
    max_output: int
    price_input: Decimal
    price_cache_write_5m: Decimal
    price_cache_write_1h: Decimal
    price_cache_read: Decimal
    price_output: Decimal

    def prices(self) -> dict[str, str]:
        """The price snapshot stored with each ApiCall (strings keep Decimal exact in JSON)."""
        return {
            "input": str(self.price_input),
            "cache_write_5m": str(self.price_cache_write_5m),
            "cache_write_1h": str(self.price_cache_write_1h),
            "cache_read": str(self.price_cache_read),
            "output": str(self.price_output),
        }


@cache
def _load(path: str) -> dict[str, ModelInfo]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    models: dict[str, ModelInfo] = {}
    for row in data["models"]:
        models[row["id"]] = ModelInfo(
            id=row["id"],
            label=row.get("label", row["id"]),
            context_window=int(row["context_window"]),
            max_output=int(row["max_output"]),
            price_input=Decimal(row["price_input"]),
            price_cache_write_5m=Decimal(row["price_cache_write_5m"]),
            price_cache_write_1h=Decimal(row["price_cache_write_1h"]),
            price_cache_read=Decimal(row["price_cache_read"]),
            price_output=Decimal(row["price_output"]),
        )
    return models


def all_models() -> list[ModelInfo]:
    return list(_load(str(settings.CLAUDE_MODEL_CATALOGUE)).values())


def get_model(model_id: str) -> ModelInfo:
    """Raises UnknownModel when the id is not in the catalogue."""
    try:
        return _load(str(settings.CLAUDE_MODEL_CATALOGUE))[model_id]
    except KeyError:
        raise UnknownModel(model_id) from None


def cost_of(
    prices: dict[str, str],
    *,
    input_tokens: int,
    cache_write_5m_tokens: int,
    cache_write_1h_tokens: int,
    cache_read_tokens: int,
    output_tokens: int,
) -> Decimal:
    """USD cost of one call from a price snapshot. A cache read is billed at the read price."""
    total = (
        input_tokens * Decimal(prices["input"])
        + cache_write_5m_tokens * Decimal(prices["cache_write_5m"])
        + cache_write_1h_tokens * Decimal(prices["cache_write_1h"])
        + cache_read_tokens * Decimal(prices["cache_read"])
        + output_tokens * Decimal(prices["output"])
    )
    return total / MTOK
