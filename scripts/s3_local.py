"""A local S3-compatible server for development and tests (moto's server mode).

Starts moto on a loopback port, creates the bucket, gives it a CORS configuration that lets the
browser upload to it directly (presigned POST) and read from it, then serves until SIGINT or
SIGTERM. Everything lives in memory: a restart starts from an empty bucket.

    python scripts/s3_local.py --port 9100 --bucket claudeweb \\
        --cors-origin http://127.0.0.1:8000 --cors-origin http://localhost:8000

With --port 0 a free port is chosen. Once the bucket is ready it prints
``s3-local listening on http://HOST:PORT`` and, with --ready-file, writes that URL to the file
(written atomically, so a reader that sees the file sees the whole URL).

moto does not enforce presigned POST policies (size, type, key prefix, signature, expiry) nor
presigned GET expiry: the app must verify uploads itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

DEFAULT_ORIGINS = ["http://127.0.0.1:8000", "http://localhost:8000"]
CORS_METHODS = ["GET", "HEAD", "POST", "PUT"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument(
        "--bucket", default=os.environ.get("AWS_STORAGE_BUCKET_NAME") or "claudeweb"
    )
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        metavar="ORIGIN",
        help="an origin allowed to GET/HEAD/POST/PUT (repeatable; '*' wildcards allowed); "
        f"default: {' '.join(DEFAULT_ORIGINS)}",
    )
    parser.add_argument("--ready-file", type=Path, help="write the endpoint URL here when ready")
    parser.add_argument("--pid-file", type=Path, help="write this process's id here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pid_file:
        args.pid_file.write_text(f"{os.getpid()}\n")
    # moto wants credentials to exist; they are never checked.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")

    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=args.region,
        config=Config(retries={"max_attempts": 2}),
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if args.bucket not in existing:
        s3.create_bucket(Bucket=args.bucket)
    s3.put_bucket_cors(
        Bucket=args.bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": args.cors_origins or DEFAULT_ORIGINS,
                    "AllowedMethods": CORS_METHODS,
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag", "Location"],
                    "MaxAgeSeconds": 3000,
                }
            ]
        },
    )

    if args.ready_file:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(endpoint + "\n")
        tmp.replace(args.ready_file)
    print(f"s3-local listening on {endpoint} (bucket {args.bucket})", flush=True)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    while not stop.wait(1.0):
        pass
    server.stop()
    for path in (args.ready_file, args.pid_file):
        if path:
            path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
