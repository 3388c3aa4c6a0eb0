"""The maintenance jobs on a schedule, for a process supervisor (make prod runs it under
supervisord): `reap_replies` every --reap-every-seconds (replies whose process died) and
`cleanup_attachments` every --cleanup-every-seconds (uploads never sent). Both run once at
start. A job that fails is logged and tried again at its next turn; the loop goes on."""

from __future__ import annotations

import logging
import time

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run reap_replies and cleanup_attachments on a schedule, until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reap-every-seconds", type=float, default=60.0)
        parser.add_argument("--cleanup-every-seconds", type=float, default=3600.0)
        parser.add_argument("--once", action="store_true", help="run each job once, then exit")

    def handle(self, *args, **options) -> None:
        jobs = {
            "reap_replies": options["reap_every_seconds"],
            "cleanup_attachments": options["cleanup_every_seconds"],
        }
        for interval in jobs.values():
            if interval <= 0:
                raise ValueError("intervals must be positive")
        due = dict.fromkeys(jobs, time.monotonic())
        while True:
            for name, interval in jobs.items():
                if time.monotonic() >= due[name]:
                    self._run(name)
                    due[name] = time.monotonic() + interval
            if options["once"]:
                return
            time.sleep(max(0.0, min(due.values()) - time.monotonic()))

    def _run(self, name: str) -> None:
        close_old_connections()  # a connection the database dropped since the last turn
        try:
            call_command(name, stdout=self.stdout)
        except Exception:  # the next turn may succeed (the database or S3 was away)
            log.exception("maintenance job %s failed", name)
        finally:
            close_old_connections()
