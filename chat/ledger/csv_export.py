"""The ledger as CSV: streamed from a server-side cursor, spreadsheet formulas defused."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Generator
from itertools import islice

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from chat.models import ApiCall

# The CSV export: header → column. Timestamps and costs come as the database prints them (UTC;
# exact decimals, never "1E-8"), which also spares parsing a million datetimes in Python.
EXPORT_COLUMNS = {
    "id": "id",
    "created_at": Cast("created_at", TextField()),
    "user_id": "user_id",
    "username": "user__username",
    "conversation_id": "conversation_id",
    "message_id": "message_id",
    "purpose": "purpose",
    "model": "model",
    "request_id": "request_id",
    "round": "round",
    "input_tokens": "input_tokens",
    "cache_write_5m_tokens": "cache_write_5m_tokens",
    "cache_write_1h_tokens": "cache_write_1h_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "output_tokens": "output_tokens",
    "stop_reason": "stop_reason",
    "error_code": "error_code",
    "ttft_ms": "ttft_ms",
    "duration_ms": "duration_ms",
    "cost": Cast("cost", TextField()),
    # Appended, not beside the tokens: readers of the earlier columns keep their positions.
    "web_search_requests": "web_search_requests",
}


EXPORT_CHUNK_ROWS = 2000


USERNAME_COLUMN = list(EXPORT_COLUMNS).index("username")


# A cell starting with one of these is a formula to a spreadsheet; such names get a quote first.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _defused(row: tuple) -> tuple:
    name = row[USERNAME_COLUMN]
    if name and name.startswith(FORMULA_START):
        return (*row[:USERNAME_COLUMN], "'" + name, *row[USERNAME_COLUMN + 1 :])
    return row


def csv_chunks(calls: QuerySet[ApiCall]) -> Generator[str, None, None]:
    """The calls as CSV text: the header, then one chunk per EXPORT_CHUNK_ROWS rows.

    The rows come from a server-side cursor, so memory stays flat however many rows there are.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    rows = calls.values_list(*EXPORT_COLUMNS.values()).iterator(chunk_size=EXPORT_CHUNK_ROWS)
    while True:
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        chunk = list(islice(rows, EXPORT_CHUNK_ROWS))
        if not chunk:
            return
        writer.writerows(map(_defused, chunk))


async def _in_request_thread(chunks: Generator[str, None, None]) -> AsyncIterator[str]:
    """Under ASGI a sync iterator would be read whole into a list; step it chunk by chunk
    in the request's thread instead (its database connection holds the cursor)."""
    step = sync_to_async(next)
    try:
        while (chunk := await step(chunks, None)) is not None:
            yield chunk
    finally:
        await sync_to_async(chunks.close)()


def csv_response(request: HttpRequest, calls: QuerySet[ApiCall]) -> StreamingHttpResponse:
    chunks = csv_chunks(calls)
    content = _in_request_thread(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="api-calls-{stamp}.csv"'
    return response
