"""The model catalogue: ids, limits, capabilities, prices per MTok and per 1,000 web searches,
read from data.

The file is settings.CLAUDE_MODEL_CATALOGUE (JSON); editing it needs no code change. Each row
names the page its figures were read from (`source`, `web_search_source` for the search price)
and the day (`checked`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

from django.conf import settings

MTOK = Decimal(1_000_000)
SEARCHES_PER_PRICE = Decimal(1000)  # the web search price is per 1,000 searches
PRICE_KEYS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
THINKING_KINDS = ("none", "manual", "manual-and-adaptive", "adaptive", "always")
EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")


class UnknownModel(LookupError):
    pass


@dataclass(frozen=True)
class PriceTier:
    """Prices for a request whose total input is above `over_input_tokens`."""

    over_input_tokens: int
    prices: dict[str, Decimal]


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
    # USD per 1,000 web searches, billed on top of tokens; the same in every prompt-size tier.
    price_web_search_per_1k: Decimal
    tiers: tuple[PriceTier, ...] = ()
    status: str = "current"  # current / legacy / deprecated
    thinking: str = "none"  # one of THINKING_KINDS
    effort_levels: tuple[str, ...] = ()
    default_effort: str = ""
    prefill: bool = False  # a request may end with an assistant turn
    compaction: bool = False  # server-side compaction (context_management compact_20260112)
    retirement: str = ""  # as announced, e.g. "not sooner than 2027-07-24"; "" if none
    web_search_source: str = ""
    source: str = ""
    checked: str = ""

    def prices(self, *, total_input: int = 0) -> dict[str, str]:
        """The price snapshot stored with each ApiCall (strings keep Decimal exact in JSON).

        `total_input` is the request's whole prompt (input + cache writes + cache reads): a
        model priced by prompt size applies the tier it falls in to every token of the
        request, output included. The snapshot holds the prices applied, so the cost can be
        recomputed from it alone; `tier` names the tier when one applied. `web_search_per_1k`
        is the price of 1,000 web searches, which no tier changes.
        """
        base = {
            "input": self.price_input,
            "cache_write_5m": self.price_cache_write_5m,
            "cache_write_1h": self.price_cache_write_1h,
            "cache_read": self.price_cache_read,
            "output": self.price_output,
        }
        snapshot = {key: str(value) for key, value in base.items()}
        for tier in sorted(self.tiers, key=lambda t: t.over_input_tokens, reverse=True):
            if total_input > tier.over_input_tokens:
                snapshot = {key: str(tier.prices[key]) for key in PRICE_KEYS}
                snapshot["tier"] = f"input>{tier.over_input_tokens}"
                break
        snapshot["web_search_per_1k"] = str(self.price_web_search_per_1k)
        return snapshot


def _tier(row: dict) -> PriceTier:
    return PriceTier(
        over_input_tokens=int(row["over_input_tokens"]),
        prices={key: Decimal(row[f"price_{key}"]) for key in PRICE_KEYS},
    )


def _row(row: dict) -> ModelInfo:
    thinking = row.get("thinking", "none")
    if thinking not in THINKING_KINDS:
        raise ValueError(f"{row['id']}: thinking {thinking!r} is not one of {THINKING_KINDS}")
    efforts = tuple(row.get("effort_levels", ()))
    if any(level not in EFFORT_LEVELS for level in efforts):
        raise ValueError(f"{row['id']}: effort levels {efforts} are not all in {EFFORT_LEVELS}")
    return ModelInfo(
        id=row["id"],
        label=row.get("label", row["id"]),
        context_window=int(row["context_window"]),
        max_output=int(row["max_output"]),
        price_input=Decimal(row["price_input"]),
        price_cache_write_5m=Decimal(row["price_cache_write_5m"]),
        price_cache_write_1h=Decimal(row["price_cache_write_1h"]),
        price_cache_read=Decimal(row["price_cache_read"]),
        price_output=Decimal(row["price_output"]),
        # Required: a row without it would price every search at nothing.
        price_web_search_per_1k=Decimal(row["price_web_search_per_1k"]),
        tiers=tuple(_tier(t) for t in row.get("price_tiers", ())),
        status=row.get("status", "current"),
        thinking=thinking,
        effort_levels=efforts,
        default_effort=row.get("default_effort") or "",
        prefill=bool(row.get("prefill", False)),
        compaction=bool(row.get("compaction", False)),
        retirement=row.get("retirement") or "",
        web_search_source=row.get("web_search_source", ""),
        source=row.get("source", ""),
        checked=row.get("checked", ""),
    )


@cache
def _load(path: str) -> dict[str, ModelInfo]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return {row["id"]: _row(row) for row in data["models"]}


def all_models() -> list[ModelInfo]:
    return list(_load(str(settings.CLAUDE_MODEL_CATALOGUE)).values())


def get_model(model_id: str) -> ModelInfo:
    """Raises UnknownModel when the id is not in the catalogue."""
    try:
        return _load(str(settings.CLAUDE_MODEL_CATALOGUE))[model_id]
    except KeyError:
        raise UnknownModel(model_id) from None


def find_model(model_id: str) -> ModelInfo | None:
    """The model's row, or None for an id the catalogue no longer lists (a retired model)."""
    return _load(str(settings.CLAUDE_MODEL_CATALOGUE)).get(model_id)


def efforts_of(model: ModelInfo) -> tuple[str, ...]:
    """The effort levels a user may ask of the model: those of its adaptive thinking. A model
    without adaptive thinking takes none (the app never asks for manual budgets)."""
    from chat.claude.request_body import ADAPTIVE_SUPPORT

    return model.effort_levels if model.thinking in ADAPTIVE_SUPPORT else ()


def nearest_effort(model: ModelInfo, effort: str) -> str:
    """`effort` if the model takes it, else the nearest level it takes ("" for none or blank).

    A conversation keeps its effort when it moves to a model that lacks that level: `xhigh`
    on a model with low, medium, high and max becomes `high` (a tie goes to the lower level,
    the cheaper one).
    """
    levels = efforts_of(model)
    if effort in levels:
        return effort
    if not levels or effort not in EFFORT_LEVELS:
        return ""
    rank = EFFORT_LEVELS.index(effort)

    def distance(level: str) -> tuple[int, int]:
        return abs(EFFORT_LEVELS.index(level) - rank), EFFORT_LEVELS.index(level)

    return min(levels, key=distance)


def max_tokens_for(model: ModelInfo) -> int:
    """A request's max_tokens: the model's max output, capped by CLAUDE_MAX_OUTPUT_TOKENS."""
    return min(model.max_output, settings.CLAUDE_MAX_OUTPUT_TOKENS)


def cost_of(
    prices: dict[str, str],
    *,
    input_tokens: int,
    cache_write_5m_tokens: int,
    cache_write_1h_tokens: int,
    cache_read_tokens: int,
    output_tokens: int,
    web_search_requests: int = 0,
) -> Decimal:
    """USD cost of one call from a price snapshot (ModelInfo.prices for that call).

    Each kind of token at its own price: cache writes per TTL, cache reads at the model's read
    price, output (thinking included: the API counts it in output_tokens) at the output price;
    then each web search at the snapshot's price per 1,000 (a snapshot without that price, one
    recorded before searches were priced, raises KeyError when asked to price a search).
    """
    total = (
        input_tokens * Decimal(prices["input"])
        + cache_write_5m_tokens * Decimal(prices["cache_write_5m"])
        + cache_write_1h_tokens * Decimal(prices["cache_write_1h"])
        + cache_read_tokens * Decimal(prices["cache_read"])
        + output_tokens * Decimal(prices["output"])
    )
    cost = total / MTOK
    if web_search_requests:
        per_1k = Decimal(prices["web_search_per_1k"])
        cost += web_search_requests * per_1k / SEARCHES_PER_PRICE
    return cost
