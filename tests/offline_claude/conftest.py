"""The offline Claude as its own tests reach it: one server per test module, and the SDK and a
raw HTTP client pointed at it. Any traceback the server logs fails the module."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator

import anthropic
import httpx2
import pytest
import pytest_asyncio

from tests.support.servers import offline_claude


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """``python -m offline_claude --port 0`` as a subprocess; yields its base URL."""
    with tempfile.TemporaryFile(mode="w+") as stderr:
        with offline_claude(stderr=stderr) as url:
            yield url
        stderr.seek(0)
        logged = stderr.read()
    # Deliberate drops are not logged; any traceback is a server bug.
    assert "Traceback" not in logged, logged


@pytest_asyncio.fixture
async def client(server_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=server_url, api_key="test", max_retries=0) as sdk:
        yield sdk


@pytest_asyncio.fixture
async def http(server_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=server_url, timeout=10) as raw:
        yield raw
