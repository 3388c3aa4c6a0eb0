"""Channels' consumer loop, made cheaper per frame, for the chat socket.

Why: a streaming reply sends a frame per delta to every tab. Channels' own loop
(`await_many_dispatch`) makes a new task and an `asyncio.wait` for every message, and its
`dispatch` hops to the database thread before every handler to close stale connections.
"""

from __future__ import annotations

import asyncio
import functools

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer


class DirectDispatchMixin:
    """Replaces `__call__` and `dispatch` of a Channels consumer.

    One long-lived reader per source (the socket, the channel layer) hands each message to its
    handler under a lock: handlers still run one at a time, each source's messages in order, and
    a source is read again only once its message is handled. Every database call of the consumer
    must go through `database_sync_to_async`, which closes stale connections itself.
    """

    async def __call__(self, scope, receive, send) -> None:
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        self.base_send = send
        turn = asyncio.Lock()

        async def read(source) -> None:
            while True:
                message = await source()
                async with turn:
                    await self.dispatch(message)

        readers = [
            asyncio.create_task(read(receive)),
            asyncio.create_task(read(self.channel_receive)),
        ]
        try:
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            for reader in done:
                reader.result()  # a reader ends only by raising: StopConsumer or a fault
        except StopConsumer:
            pass
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def dispatch(self, message: dict) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
