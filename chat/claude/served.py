"""The model catalogue against the models the API serves (`GET /v1/models`): one row per id."""

from __future__ import annotations

from dataclasses import dataclass

from chat.claude import catalogue, client


@dataclass(frozen=True)
class Row:
    id: str
    status: str  # ok / missing / mismatch / not in catalogue
    window: str
    max_output: str


def _pair(ours: int | None, theirs: int | None) -> str:
    left = f"{ours:,}" if ours is not None else "-"
    right = f"{theirs:,}" if theirs is not None else "-"
    return left if left == right else f"{left} / {right}"


def compare(models: list[catalogue.ModelInfo], served: list[client.ServedModel]) -> list[Row]:
    """One row per id in either list. A limit the API does not report is not a mismatch."""
    by_id = {s.id: s for s in served}
    rows = []
    for model in models:
        api = by_id.get(model.id)
        if api is None:
            rows.append(
                Row(
                    model.id,
                    "missing",
                    _pair(model.context_window, None),
                    _pair(model.max_output, None),
                )
            )
            continue
        differs = (api.max_input_tokens not in (None, model.context_window)) or (
            api.max_tokens not in (None, model.max_output)
        )
        rows.append(
            Row(
                model.id,
                "mismatch" if differs else "ok",
                _pair(model.context_window, api.max_input_tokens),
                _pair(model.max_output, api.max_tokens),
            )
        )
    listed = {m.id for m in models}
    for api in served:
        if api.id not in listed:
            rows.append(
                Row(
                    api.id,
                    "not in catalogue",
                    _pair(None, api.max_input_tokens),
                    _pair(None, api.max_tokens),
                )
            )
    return rows
