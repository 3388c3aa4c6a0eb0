"""Daphne on uvloop: `python -m claudeweb.server [Daphne's arguments]`.

Daphne runs Twisted's asyncio reactor on an event loop it makes when `daphne.server` is first
imported. Installing uvloop's policy before that import makes it a uvloop loop: every socket
read and write, timer and task wake-up then runs in libuv's C code instead of asyncio's Python.
A streaming reply is mostly such work (each token is read from the API's stream and each
coalesced frame is written to the browser), so a process relays the same replies with about a
fifth less CPU (bench/README.md has the figures).

`CLAUDEWEB_EVENT_LOOP=asyncio` keeps asyncio's own loop. Where uvloop is not installed (it is
not built for Windows), the server says so and runs on asyncio's loop.
"""

from __future__ import annotations

import asyncio
import os
import sys

LOOPS = ("uvloop", "asyncio")


def install_event_loop(choice: str | None = None) -> str:
    """Make new event loops uvloop's (or leave asyncio's); the name of the loop chosen."""
    choice = (choice if choice is not None else os.environ.get("CLAUDEWEB_EVENT_LOOP", "")).strip()
    choice = choice or "uvloop"
    if choice not in LOOPS:
        raise SystemExit(f"CLAUDEWEB_EVENT_LOOP must be one of {', '.join(LOOPS)}, not {choice!r}")
    if "daphne.server" in sys.modules:
        raise RuntimeError("daphne.server was imported before the event loop was chosen")
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        print("uvloop is not installed: running on asyncio's event loop", file=sys.stderr)
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def main() -> None:
    loop = install_event_loop()
    print(f"claudeweb: Daphne on the {loop} event loop", file=sys.stderr, flush=True)
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
