"""Delete images that were uploaded but never sent, and upload objects no attachment owns."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chat.uploads import attachments, errors


class Command(BaseCommand):
    help = (
        "Delete attachments never sent with a message, older than the given age, and objects "
        "under uploads/ that no attachment owns (older than the upload signature's lifetime)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than-hours",
            type=int,
            default=None,
            help="age in hours (default: ATTACHMENT_UNSENT_TTL_HOURS, "
            f"{settings.ATTACHMENT_UNSENT_TTL_HOURS})",
        )

    def handle(self, *args, **options) -> None:
        hours = options["older_than_hours"]
        if hours is None:
            hours = settings.ATTACHMENT_UNSENT_TTL_HOURS
        if hours < 0:
            raise CommandError("--older-than-hours must be 0 or more.")
        deleted = attachments.cleanup_unsent(older_than_hours=hours)
        self.stdout.write(f"Deleted {deleted} unsent attachment(s) older than {hours} h.")
        try:
            orphans = attachments.cleanup_orphan_uploads()
        except errors.AttachmentError as exc:
            raise CommandError(f"Could not list the uploads: {exc.message}") from None
        self.stdout.write(f"Deleted {orphans} upload object(s) no attachment owns.")
