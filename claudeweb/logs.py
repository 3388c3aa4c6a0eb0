"""Log records as JSON lines (LOG_FORMAT=json) and the ids every record carries.

One object per line: `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`,
then `request_id` and `conversation_id` when known (chat/telemetry/context.py), and
`exception` (the formatted traceback) when the record has one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from chat.telemetry import context


class ContextFilter(logging.Filter):
    """Puts the current request's and conversation's ids on each record (None when unknown),
    unless the call gave its own through `extra`. Django logs a response's status after the
    middleware has returned, with the request in `extra`: its ids are read from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        for key in ("request_id", "conversation_id"):
            if not hasattr(record, key):
                value = getattr(context, key).get()
                if value is None and request is not None:
                    value = getattr(request, key, None)
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, tz=UTC)
        line = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "conversation_id"):
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: a value that JSON cannot hold (a Decimal, a path) is written as text.
        return json.dumps(line, ensure_ascii=False, default=str)
