"""The baseline for bench/relay.py: the thinnest relay of a streamed reply to a WebSocket.

    .venv/bin/python bench/bare_relay.py --upstream http://127.0.0.1:8765 [--port 0]

Offline Claude → anthropic SDK raw events (`messages.create(stream=True)`) → a plain
`websockets` server: no Django, no database, no channel layer, no login. It speaks the part of
docs/protocol.md the bench client uses (`send` → `message` ack, `start`, numbered `delta`s,
`done`) and coalesces deltas exactly as chat/replies/delivery.py does (the first text at once;
then wait for text, sleep the coalesce interval, send everything pending as one frame), so
the app and this relay send the same frames and the difference between them is the app's own
cost.

Prints one line when ready: `bare-relay listening on ws://127.0.0.1:PORT` (flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket

import anthropic
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

MODEL = "claude-sonnet-4-6"
MAX_TOKENS = 4096


class Relay:
    def __init__(self, upstream: str, coalesce_ms: float) -> None:
        self.client = anthropic.AsyncAnthropic(base_url=upstream, api_key="bench", max_retries=0)
        self.interval = coalesce_ms / 1000
        self.next_message_id = 0

    async def handle(self, ws: ServerConnection) -> None:
        replies: set[asyncio.Task] = set()
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") != "send":
                    continue
                task = asyncio.create_task(self.reply(ws, frame))
                replies.add(task)
                task.add_done_callback(replies.discard)
        except ConnectionClosed:
            pass
        finally:
            for task in replies:
                task.cancel()

    async def reply(self, ws: ServerConnection, frame: dict) -> None:
        self.next_message_id += 1
        message_id = self.next_message_id
        await ws.send(
            json.dumps({"type": "message", "client_id": frame["client_id"], "message": {}})
        )
        await ws.send(json.dumps({"type": "start", "message_id": message_id}))
        pending: list[str] = []
        has_text = asyncio.Event()
        closing = False
        seq = 0
        usage: dict = {}
        stop_reason = ""

        async def flush() -> None:
            nonlocal seq
            while True:
                await has_text.wait()
                if not closing and seq:
                    await asyncio.sleep(self.interval)
                has_text.clear()
                if pending:
                    text = "".join(pending)
                    pending.clear()
                    seq += 1
                    await ws.send(
                        json.dumps(
                            {"type": "delta", "message_id": message_id, "seq": seq, "text": text}
                        )
                    )
                if closing:
                    return

        flusher = asyncio.create_task(flush())
        try:
            stream = await self.client.messages.create(
                model=MODEL,
                max_tokens=MAX_TOKENS,
                messages=[{"role": "user", "content": frame["text"]}],
                stream=True,
            )
            async with stream:
                async for event in stream:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        pending.append(event.delta.text)
                        has_text.set()
                    elif event.type == "message_delta":
                        stop_reason = event.delta.stop_reason or ""
                        usage = {"output_tokens": event.usage.output_tokens}
        except anthropic.APIError as exc:
            flusher.cancel()
            await ws.send(json.dumps({"type": "error", "code": "upstream", "message": str(exc)}))
            return
        closing = True
        has_text.set()
        await flusher
        await ws.send(
            json.dumps(
                {
                    "type": "done",
                    "message_id": message_id,
                    "stop_reason": stop_reason,
                    "usage": usage,
                }
            )
        )


async def serve_forever(host: str, port: int, upstream: str, coalesce_ms: float) -> None:
    relay = Relay(upstream, coalesce_ms)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    # Same transport choices as the app's clients get from Daphne: no compression, TCP_NODELAY
    # (asyncio sets it on the sockets of a server it binds itself).
    async with serve(
        relay.handle, host, port, compression=None, max_size=2**20, backlog=4096
    ) as server:
        bound = next(s.getsockname()[1] for s in server.sockets if s.family == socket.AF_INET)
        print(f"bare-relay listening on ws://{host}:{bound}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="the offline Claude's base URL")
    parser.add_argument("--coalesce-ms", type=float, default=40.0)
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop (asyncio's own: the simplest relay; uvloop: the app's default)",
    )
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve_forever(args.host, args.port, args.upstream, args.coalesce_ms))


if __name__ == "__main__":
    main()
