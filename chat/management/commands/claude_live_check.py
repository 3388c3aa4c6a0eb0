"""Check the configured Claude API key: one small request per capability, a table of results."""

from __future__ import annotations

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chat.claude import catalogue
from chat.replies import live_check

COLUMNS = ("capability", "result", "model", "input", "output", "cost", "time", "detail / error")


def _row(outcome: live_check.Outcome) -> tuple[str, ...]:
    usage = outcome.usage
    return (
        outcome.capability,
        "ok" if outcome.ok else "FAILED",
        outcome.model,
        f"{outcome.input_tokens:,}",
        f"{usage.output_tokens:,}",
        f"${outcome.cost:.6f}",
        f"{outcome.seconds:.2f} s",
        outcome.detail if outcome.ok else outcome.error,
    )


class Command(BaseCommand):
    help = (
        "Make one small request per capability the app relies on (a streamed reply, a tool "
        "loop with adaptive thinking, Continue, count_tokens, the models list) with the "
        "configured key, through the app's own client, and print what each did and cost. "
        "Exits 1 if any failed."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--model",
            help="a catalogue id (default: the cheapest current model with adaptive thinking)",
        )

    def handle(self, *args, model: str | None = None, **options) -> None:
        if not live_check.configured():
            raise CommandError(
                "ANTHROPIC_API_KEY is not set: there is no key to check. Set it (and leave "
                "ANTHROPIC_BASE_URL unset to reach Anthropic's API)."
            )
        try:
            info = catalogue.get_model(model) if model else live_check.default_model()
        except catalogue.UnknownModel as exc:
            raise CommandError(
                f"{exc}: not in the catalogue ({settings.CLAUDE_MODEL_CATALOGUE})"
            ) from None
        _, target = live_check.describe_target(settings.ANTHROPIC_BASE_URL)
        self.stdout.write(target)
        self.stdout.write(
            f"Model {info.id}; at most ${live_check.worst_case_cost(info):.4f} "
            "(every request writing its whole max_tokens)."
        )
        outcomes = asyncio.run(live_check.run(info))
        rows = [COLUMNS, *(_row(o) for o in outcomes)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
        requests = sum(len(o.calls) for o in outcomes) + 2  # count_tokens and the models list
        cost = sum(o.cost for o in outcomes)
        failed = [o.capability for o in outcomes if not o.ok]
        self.stdout.write(f"{requests} requests, ${cost:.6f} at the catalogue's prices.")
        if failed:
            raise CommandError(
                f"{len(failed)} of {len(outcomes)} capabilities FAILED: {', '.join(failed)}.",
                returncode=1,
            )
        self.stdout.write(f"All {len(outcomes)} capabilities ok.")
