from django.conf import settings
from django.core.management.base import BaseCommand

from chat.replies import checkpoints


class Command(BaseCommand):
    help = "Mark replies left streaming by a stopped process as interrupted (text kept)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--stale-seconds",
            type=float,
            default=settings.STREAM_STALE_S,
            help="Only replies with no checkpoint for this long (0 at startup of a lone process).",
        )

    def handle(self, *args, **options) -> None:
        count = checkpoints.reap_stale_replies(stale_seconds=options["stale_seconds"])
        self.stdout.write(f"Marked {count} reply(ies) interrupted.")
