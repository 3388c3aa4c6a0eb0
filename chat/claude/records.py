"""What one request to Claude did: its usage in the API's terms and its call record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Usage:
    """Token figures in the API's meaning: input_tokens excludes cache tokens.

    `web_search_requests` is the API's `usage.server_tool_use.web_search_requests`: the web
    searches the request ran, each billed on top of the tokens.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    web_search_requests: int = 0

    @property
    def cache_creation_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_write_5m_tokens += other.cache_write_5m_tokens
        self.cache_write_1h_tokens += other.cache_write_1h_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.web_search_requests += other.web_search_requests

    @property
    def prompt_tokens(self) -> int:
        """The whole input: uncached, written to the cache and read from it."""
        return self.input_tokens + self.cache_creation_tokens + self.cache_read_tokens

    def as_api(self) -> dict[str, int]:
        """In the API's field names, as the `done` frame carries them (tokens only)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
        }


@dataclass
class CallRecord:
    """What one upstream request did; filled while streaming, complete or not.

    After a failure it holds the usage the API had reported so far (message_start), so the
    ledger records it. `usage` is the API's top-level usage: the reply's own sampling, whose
    input is the context the reply read. `compaction` sums the request's compaction
    iterations (server-side compaction): billed too, but not in the top-level figures.
    """

    model: str
    request_id: str = ""
    message_id: str = ""
    usage: Usage = field(default_factory=Usage)
    compaction: Usage | None = None
    stop_reason: str = ""
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished: float | None = None
    error_code: str = ""
    purpose: str = "reply"
    round: int = 0
    ledger_id: int | None = None  # its ApiCall row, once written at message_start
    content: list[dict] = field(default_factory=list)

    @property
    def ttft_ms(self) -> int | None:
        if self.first_token_at is None:
            return None
        return round((self.first_token_at - self.started) * 1000)

    @property
    def duration_ms(self) -> int:
        end = self.finished if self.finished is not None else time.monotonic()
        return round((end - self.started) * 1000)
