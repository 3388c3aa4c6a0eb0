"""Compare the model catalogue with the models the API serves (`GET /v1/models`)."""

from __future__ import annotations

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chat.claude import catalogue, client, errors
from chat.claude.served import Row, compare


class Command(BaseCommand):
    help = (
        "Compare chat/claude/models.json with GET /v1/models: ids the API does not serve "
        "(missing), context window / max output that differ (catalogue / API), ids the "
        "catalogue lacks."
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
