"""A local S3-compatible server for development and tests (moto's server mode).

Starts moto on a loopback port, creates the bucket, gives it a CORS configuration that lets the
browser upload to it directly (presigned POST) and read from it, then serves until SIGINT or
SIGTERM. moto keeps objects in memory; with --data-dir the bucket's objects are kept on disk too
(`make run` does this, so uploads survive a restart): they are put back at start, every change is
written to that directory within --sync-interval seconds (1 s) through the S3 API itself, and once
more on SIGINT/SIGTERM. Without --data-dir (the test suite) a restart starts from an empty bucket.

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
import json
import os
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import quote

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
    parser.add_argument(
        "--data-dir", type=Path, help="keep the bucket's objects in this directory across restarts"
    )
    parser.add_argument("--sync-interval", type=float, default=1.0, metavar="SECONDS")
    return parser.parse_args(argv)


class DiskCopy:
    """The bucket's objects mirrored in a directory: one file per object (its key percent-encoded
    into a single file name, so no key can reach outside) and index.json with each object's ETag,
    content type and metadata. It talks to the server only through the S3 API, so it does not
    depend on moto's internals."""

    def __init__(self, s3, bucket: str, root: Path) -> None:
        self.s3, self.bucket, self.root = s3, bucket, root
        self.objects = root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        index = root / "index.json"
        self.index: dict[str, dict] = json.loads(index.read_text()) if index.is_file() else {}

    def _path(self, key: str) -> Path:
        return self.objects / quote(key, safe="")

    def restore(self) -> int:
        """Put every stored object back into the (empty) bucket; returns how many."""
        for key, meta in list(self.index.items()):
            path = self._path(key)
            if not path.is_file():
                del self.index[key]
                continue
            put = self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=path.read_bytes(),
                ContentType=meta.get("content_type") or "binary/octet-stream",
                Metadata=meta.get("metadata") or {},
            )
            meta["etag"] = put["ETag"]
        self._write_index()
        return len(self.index)

    def sync(self) -> bool:
        """Write what changed since the last sync; True when something did."""
        listed: dict[str, str] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                listed[obj["Key"]] = obj["ETag"]
        changed = False
        for key, etag in listed.items():
            if self.index.get(key, {}).get("etag") == etag:
                continue
            got = self.s3.get_object(Bucket=self.bucket, Key=key)
            self._write(self._path(key), got["Body"].read())
            self.index[key] = {
                "etag": got["ETag"],
                "content_type": got.get("ContentType"),
                "metadata": got.get("Metadata") or {},
            }
            changed = True
        for key in set(self.index) - set(listed):
            self._path(key).unlink(missing_ok=True)
            del self.index[key]
            changed = True
        if changed:
            self._write_index()
        return changed

    def _write_index(self) -> None:
        self._write(self.root / "index.json", json.dumps(self.index, indent=1).encode())

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)


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

    disk = None
    if args.data_dir:
        disk = DiskCopy(s3, args.bucket, args.data_dir)
        restored = disk.restore()
        print(f"s3-local restored {restored} objects from {args.data_dir}", flush=True)

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
    interval = args.sync_interval if disk else 1.0
    while not stop.wait(interval):
        if disk:
            sync_quietly(disk)
    if disk:
        sync_quietly(disk)
    server.stop()
    for path in (args.ready_file, args.pid_file):
        if path:
            path.unlink(missing_ok=True)
    return 0


def sync_quietly(disk: DiskCopy) -> None:
    """A failed sync (a disk error, an object deleted mid-sync) is retried at the next tick."""
    try:
        disk.sync()
    except Exception as exc:  # noqa: BLE001 — keep serving; the next sync catches up
        print(f"s3-local: sync to {disk.root} failed: {exc!r}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
