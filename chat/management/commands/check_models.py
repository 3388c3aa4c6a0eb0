"""Compare the model catalogue with the models the API serves (`GET /v1/models`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chat.claude import catalogue, client, errors


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


class Command(BaseCommand):
    help = (
        "Compare chat/models.json with GET /v1/models: ids the API does not serve (missing), "
        "context window / max output that differ (catalogue / API), ids the catalogue lacks."
    )

    def handle(self, *args, **options) -> None:
        if not settings.ANTHROPIC_API_KEY and not settings.ANTHROPIC_BASE_URL:
            raise CommandError("ANTHROPIC_API_KEY is not set: there is no API to compare with.")
        try:
            served = asyncio.run(client.list_models())
        except errors.ClaudeError as exc:
            raise CommandError(f"GET /v1/models failed: {exc.code}: {exc}") from None
        rows = compare(catalogue.all_models(), served)
        header = Row("model", "status", "context window", "max output")
        fields = list(Row.__annotations__)
        width = [max(len(getattr(r, f)) for r in [header, *rows]) for f in fields]
        for row in [header, *rows]:
            cells = [getattr(row, f).ljust(w) for f, w in zip(fields, width, strict=True)]
            self.stdout.write("  ".join(cells).rstrip())
        counts = {s: sum(r.status == s for r in rows) for s in ("missing", "mismatch")}
        self.stdout.write(
            f"{len(rows)} models: {counts['missing']} missing from the API, "
            f"{counts['mismatch']} with different limits."
        )
