"""Command line entry point: ``python -m offline_claude [--host H] [--port P]``.

Binds the socket itself so that ``--port 0`` works, then prints exactly one line
``offline-claude listening on http://HOST:PORT`` (flushed) before serving with
uvicorn. Logs at ``warning`` level by default; the deliberate connection aborts of
``drop_after`` are not logged.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

import uvicorn

from .app import create_app
from .errors import DropConnection


class _HideDeliberateDrops(logging.Filter):
    """Drop uvicorn's "Exception in ASGI application" records caused by :class:`DropConnection`."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DropConnection)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, bind, announce the address and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m offline_claude", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    config = uvicorn.Config(
        create_app(),
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    logging.getLogger("uvicorn.error").addFilter(_HideDeliberateDrops())
    print(f"offline-claude listening on http://{host}:{port}", flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
