"""A minimal ASGI app for tests/test_server.py: answers with the event loop it runs on."""

import asyncio


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    loop = type(asyncio.get_running_loop())
    body = f"{loop.__module__}.{loop.__qualname__}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
