"""The ids a log line carries where they are known: the HTTP request's and the conversation's.

Set by the request middleware (claudeweb/middleware.py) and the chat socket; asyncio tasks and
sync_to_async threads inherit them, so a reply's task logs with its conversation's id.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
conversation_id: ContextVar[int | None] = ContextVar("conversation_id", default=None)
