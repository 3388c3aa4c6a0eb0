"""Logged-in browsers (test clients) and their sockets, for the account tests."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from tests.conftest import FRAME_TIMEOUT_S, ORIGIN

# The contract: an ended session's sockets are closed within a second.
CLOSE_WITHIN_S = 1.0
CLOSE_UNAUTHENTICATED = 4401


async def browser(user) -> Client:
    """A client logged in as `user` through Django's login (so the login signal runs)."""
    client = Client()
    await sync_to_async(client.force_login)(user)
    return client


def session_key(client: Client) -> str:
    return client.cookies["sessionid"].value


@pytest.fixture
async def sockets():
    """Open chat sockets with a browser's cookie; every one is disconnected at the end."""
    from claudeweb.asgi import application

    opened: list[WebsocketCommunicator] = []

    async def open_for(client: Client, conversation_id: int) -> WebsocketCommunicator:
        headers = [ORIGIN, (b"cookie", f"sessionid={session_key(client)}".encode())]
        comm = WebsocketCommunicator(
            application, f"/ws/conversations/{conversation_id}/", headers=headers
        )
        opened.append(comm)
        connected, _ = await comm.connect(timeout=FRAME_TIMEOUT_S)
        assert connected
        assert await comm.receive_nothing(timeout=0.1), "the socket closed at once"
        return comm

    yield open_for
    for comm in opened:
        await comm.disconnect()


async def close_code(comm: WebsocketCommunicator, timeout: float = CLOSE_WITHIN_S) -> int:
    """The close code the socket gets within `timeout` (TimeoutError when it stays open)."""
    output = await comm.receive_output(timeout=timeout)
    assert output["type"] == "websocket.close", output
    return output["code"]


async def still_serves(comm: WebsocketCommunicator) -> bool:
    """The socket answers a frame (an unknown type gets an `invalid_frame` error, not a close)."""
    await comm.send_json_to({"type": "ping"})
    frame = await comm.receive_json_from(timeout=FRAME_TIMEOUT_S)
    return frame["type"] == "error" and frame["code"] == "invalid_frame"
