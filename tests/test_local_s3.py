"""The local S3 server of `make run` keeps what it stores across restarts (scripts/s3_local.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "claudeweb"
START_TIMEOUT_S = 30


@contextmanager
def local_s3(data_dir: Path | None, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """scripts/s3_local.py on a free port; yields the process and its endpoint."""
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    args = [sys.executable, str(ROOT / "scripts/s3_local.py"), "--port", "0"]
    args += ["--bucket", BUCKET, "--ready-file", str(ready)]
    if data_dir:
        args += ["--data-dir", str(data_dir)]
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: ready.is_file() or proc.poll() is not None, "the server to start")
        assert proc.poll() is None, proc.stderr.read().decode()
        yield proc, ready.read_text().strip()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        proc.stderr.close()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}),
    )


def post_as_the_browser_does(s3, key: str, body: bytes, content_type: str) -> None:
    """A presigned POST, multipart form, as the upload page sends it."""
    form = s3.generate_presigned_post(
        BUCKET,
        key,
        Fields={"Content-Type": content_type},
        Conditions=[{"Content-Type": content_type}],
    )
    boundary = "----claudeweb-test"
    parts = []
    for name, value in {**form["fields"]}.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        form["url"],
        data=b"".join(parts),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201, 204)


def test_an_object_survives_a_restart(tmp_path):
    data = tmp_path / "s3"
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
    with local_s3(data, tmp_path) as (_, endpoint):
        s3 = client(endpoint)
        post_as_the_browser_does(s3, "uploads/7/3f2a", png, "image/png")
        s3.put_object(Bucket=BUCKET, Key="uploads/7/../../escape", Body=b"kept inside")
        s3.put_object(Bucket=BUCKET, Key="uploads/7/gone", Body=b"deleted before the restart")
        s3.delete_object(Bucket=BUCKET, Key="uploads/7/gone")
    # Stopped (SIGTERM): a fresh server on another port serves the same objects.
    with local_s3(data, tmp_path) as (_, endpoint):
        s3 = client(endpoint)
        got = s3.get_object(Bucket=BUCKET, Key="uploads/7/3f2a")
        assert got["Body"].read() == png
        assert got["ContentType"] == "image/png"
        escape = s3.get_object(Bucket=BUCKET, Key="uploads/7/../../escape")
        assert escape["Body"].read() == b"kept inside"
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
        assert keys == {"uploads/7/3f2a", "uploads/7/../../escape"}
    assert not (tmp_path / "escape").exists()


def synced_keys(data) -> set[str]:
    """The keys the disk copy's index lists (written whole, after the objects' files)."""
    index = data / "index.json"
    return set(json.loads(index.read_text())) if index.is_file() else set()


def test_a_killed_server_keeps_what_it_had_synced(tmp_path):
    data = tmp_path / "s3"
    with local_s3(data, tmp_path) as (proc, endpoint):
        client(endpoint).put_object(Bucket=BUCKET, Key="uploads/1/a", Body=b"synced")
        # A sync writes the object's file, then the index that lists it: wait for both.
        wait_for(lambda: "uploads/1/a" in synced_keys(data), "the object's sync to finish")
        os.kill(proc.pid, signal.SIGKILL)  # no chance to flush: only the periodic sync counts
        proc.wait(timeout=10)
    with local_s3(data, tmp_path) as (_, endpoint):
        body = client(endpoint).get_object(Bucket=BUCKET, Key="uploads/1/a")["Body"].read()
        assert body == b"synced"


def test_without_a_data_dir_a_restart_starts_empty(tmp_path):
    with local_s3(None, tmp_path) as (_, endpoint):
        client(endpoint).put_object(Bucket=BUCKET, Key="k", Body=b"x")
    with local_s3(None, tmp_path) as (_, endpoint):
        assert "Contents" not in client(endpoint).list_objects_v2(Bucket=BUCKET)


@pytest.mark.parametrize("key", ["../outside", "a/../../b", "/abs"])
def test_keys_never_name_a_file_outside_the_directory(tmp_path, key):
    data = tmp_path / "s3"
    with local_s3(data, tmp_path) as (_, endpoint):
        client(endpoint).put_object(Bucket=BUCKET, Key=key, Body=b"x")
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "ready-" not in p.name]
    assert files and all(p.parent in (data, data / "objects") for p in files), files
