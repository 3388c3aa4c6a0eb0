"""The channel layer: Redis pub/sub that delivers in-process first.

Most frames of a reply are for the tab that asked for it, and that tab's socket is in the
process running the reply. channels_redis' RedisPubSubChannelLayer sends every frame through
Redis anyway: serialise, PUBLISH (one round trip, behind a lock shared by every publisher of
the process), read it back on the subscriber connection, deserialise, queue. This layer hands
a frame to the sockets of this process directly and publishes it only while another process
may have a member of the group:

- `group_send` queues the frame for the group's members in this process at once. It then
  publishes unless the last publish to that group, less than `ALONE_RECHECK_S` ago, reached no
  subscriber but this process (PUBLISH answers how many subscribers got the message).
- A process whose first member joins a group publishes a join notice to it once it is
  subscribed: a process that had stopped publishing to the group hears it and publishes the
  next frame again. A socket misses nothing in between: its tab sends `resume` as soon as it is
  open, which reaches the reply after the notice (both come from the same process, in order),
  and the reply answers with every delta since the tab's last one (docs/protocol.md).
- Published group messages carry the sending process's id; a process drops its own (its
  members got them directly).
- `send` to a channel of this process (a `resume`'s answer) is queued directly too.

Every process of a deployment must use this layer (they read each other's group messages).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _wrap_close, decode_hosts

ORIGIN_BYTES = 16
JOIN_NOTICE = b"\x00join"
# How long "nobody else listens to this group" is trusted before a publish counts again.
ALONE_RECHECK_S = 1.0


class LocalFirstPubSubChannelLayer(RedisPubSubChannelLayer):
    def _get_layer(self):
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = LocalFirstLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer


class LocalFirstLoopLayer(RedisPubSubLoopLayer):
    def __init__(self, hosts=None, *args, **kwargs) -> None:
        super().__init__(hosts, *args, **kwargs)
        self.origin = uuid.uuid4().bytes
        self._shards = [_Shard(host, self) for host in decode_hosts(hosts)]
        # Group channel → until when only this process is known to listen to it.
        self._alone_until: dict[str, float] = {}

    def _deliver_locally(self, group_channel: str, data: bytes) -> bool:
        members = self.groups.get(group_channel)
        if not members:
            return False
        for name in members:
            queue = self.channels.get(name)
            if queue is not None:
                queue.put_nowait(data)
        return True

    async def flush(self):
        self._alone_until.clear()
        await super().flush()

    def heard_join(self, group_channel: str) -> None:
        self._alone_until.pop(group_channel, None)

    async def send(self, channel, message):
        queue = self.channels.get(channel)
        if queue is not None:  # a channel of this process: no round trip through Redis
            queue.put_nowait(self.channel_layer.serialize(message))
            return
        await super().send(channel, message)

    async def group_add(self, group, channel):
        group_channel = self._get_group_channel_name(group)
        first = group_channel not in self.groups
        await super().group_add(group, channel)
        if first:
            shard = self._get_shard(group_channel)
            await shard.publish(group_channel, self.origin + JOIN_NOTICE)

    async def group_discard(self, group, channel):
        await super().group_discard(group, channel)
        group_channel = self._get_group_channel_name(group)
        if group_channel not in self.groups:
            self._alone_until.pop(group_channel, None)

    async def group_send(self, group, message):
        group_channel = self._get_group_channel_name(group)
        data = self.channel_layer.serialize(message)
        local = self._deliver_locally(group_channel, data)
        now = time.monotonic()
        if local and self._alone_until.get(group_channel, 0.0) > now:
            return
        shard = self._get_shard(group_channel)
        receivers = await shard.publish_counted(group_channel, self.origin + data)
        if local and group_channel in shard._subscribed_to and receivers <= 1:
            # Only this process's own subscription got it.
            self._alone_until[group_channel] = now + ALONE_RECHECK_S
        else:
            self._alone_until.pop(group_channel, None)


class _Shard(RedisSingleShardConnection):
    async def publish_counted(self, channel: str, message: bytes) -> int:
        """PUBLISH; how many subscribers (connections, this process's included) got it."""
        async with self._lock:
            self._ensure_redis()
            return await self._redis.publish(channel, message)

    def _receive_message(self, message):
        if message is None:
            return
        name = message["channel"]
        if isinstance(name, bytes):
            name = name.decode()
        data = message["data"]
        layer = self.channel_layer
        if name in layer.groups:
            origin, data = data[:ORIGIN_BYTES], data[ORIGIN_BYTES:]
            if data == JOIN_NOTICE:
                if origin != layer.origin:
                    layer.heard_join(name)
                return
            if origin == layer.origin:  # its members here had it when it was sent
                return
        super()._receive_message({"channel": name, "data": data})
