"""S3 access for attachments: the one module that talks to S3.

The client is django-storages' connection for STORAGES["attachments"], so every AWS_* setting
(endpoint, region, addressing style, credentials) applies. boto3 types and errors stay inside:
callers get bytes, dicts and AttachmentError(storage_unavailable). Presigned URLs are minted when
needed and never stored.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files.storage import storages

from chat.models import Attachment
from chat.uploads.errors import STORAGE_UNAVAILABLE, AttachmentError

log = logging.getLogger(__name__)


def _storage():
    return storages["attachments"]


# One boto3 client per storage, shared by every thread (boto3's clients are thread-safe; its
# sessions and resources are not). django-storages makes a session and resource per thread, and
# under Daphne each request runs on a new thread: that cost 13 MiB and 0.3 s of CPU per request,
# 270 MiB for 20 finishes at once (bench/upload_memory.py).
_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_clients_lock = threading.Lock()


def client():
    """The boto3 S3 client shared by every thread."""
    storage = _storage()
    client = _clients.get(storage)
    if client is None:
        with _clients_lock:
            client = _clients.get(storage)
            if client is None:
                client = _clients[storage] = storage.connection.meta.client
    return client


def bucket() -> str:
    return _storage().bucket_name


def storage_error(exc: Exception) -> AttachmentError:
    log.warning("S3 request failed: %s", exc)
    return AttachmentError(STORAGE_UNAVAILABLE, "File storage is not reachable right now.")


def head(key: str) -> dict | None:
    """The object's metadata, or None when there is no such object."""
    try:
        return client().head_object(Bucket=bucket(), Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise storage_error(exc) from None
    except BotoCoreError as exc:
        raise storage_error(exc) from None


def read(key: str, *, limit: int) -> bytes | None:
    """At most limit + 1 bytes of the object (so a caller sees that it is too big), or None."""
    try:
        response = client().get_object(Bucket=bucket(), Key=key)
        body = response["Body"]
        try:
            return body.read(limit + 1)
        finally:
            body.close()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise storage_error(exc) from None
    except BotoCoreError as exc:
        raise storage_error(exc) from None


def write(key: str, data: bytes, content_type: str) -> None:
    try:
        client().put_object(
            Bucket=bucket(),
            Key=key,
            Body=data,
            ContentType=content_type,
            CacheControl="private, max-age=86400",
        )
    except (BotoCoreError, ClientError) as exc:
        raise storage_error(exc) from None


def delete_objects(keys: list[str]) -> bool:
    """Deletes the objects (missing ones count as deleted); False when S3 could not be reached."""
    s3, bucket_name = client(), bucket()
    ok = True
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        try:
            result = s3.delete_objects(
                Bucket=bucket_name, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("Could not delete %d attachment objects: %s", len(chunk), exc)
            ok = False
            continue
        for error in result.get("Errors", []):
            log.warning("Could not delete %s: %s", error.get("Key"), error.get("Message"))
            ok = False
    return ok


def list_objects(prefix: str) -> Iterator[tuple[str, datetime]]:
    """(key, last modified) of every object under the prefix. Raises AttachmentError."""
    try:
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket(), Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"], obj["LastModified"]
    except (BotoCoreError, ClientError) as exc:
        raise storage_error(exc) from None


def presigned_post(key: str, *, content_type: str, max_bytes: int) -> dict:
    """{"url": …, "fields": …} for a browser POST of exactly this key and Content-Type, 1..max_bytes
    long, valid for PRESIGN_POST_EXPIRY_SECONDS. Raises AttachmentError."""
    try:
        post = client().generate_presigned_post(
            Bucket=bucket(),
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[
                {"Content-Type": content_type},
                ["content-length-range", 1, max_bytes],
            ],
            ExpiresIn=settings.PRESIGN_POST_EXPIRY_SECONDS,
        )
    except (BotoCoreError, ClientError) as exc:
        raise storage_error(exc) from None
    return {"url": post["url"], "fields": post["fields"]}


def served_content_type(content_type: str) -> str:
    """The Content-Type a download is served with: text is UTF-8 (checked at finish), so say so."""
    return f"{content_type}; charset=utf-8" if content_type.startswith("text/") else content_type


def presigned_get_url(attachment: Attachment, *, expires_in: int | None = None) -> str:
    """A fresh, short-lived GET URL; the response's Content-Type is pinned to the verified type."""
    try:
        return client().generate_presigned_url(
            "get_object",
            Params={
                "Bucket": bucket(),
                "Key": attachment.key,
                "ResponseContentType": served_content_type(attachment.content_type),
            },
            ExpiresIn=expires_in or settings.PRESIGN_GET_EXPIRY_SECONDS,
        )
    except (BotoCoreError, ClientError) as exc:
        raise storage_error(exc) from None
