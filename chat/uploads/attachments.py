"""Images attached to messages: the one module that talks to S3.

start → upload → finish. `start_upload` saves a pending row and signs a presigned POST for a key
the server makes; the browser posts the file straight to S3; `finish_upload` checks what arrived
(size, type, magic bytes, pixels), re-encodes it with Pillow and writes the clean bytes under
another key (`images/…`), deleting the upload. Only verified attachments may be sent.
Presigned URLs are minted when needed and never stored.

Callers see `Attachment` rows, plain dicts and one error type, `AttachmentError`; boto3 and
Pillow types and errors stay inside (the Pillow work is in chat/image_codec.py). The S3 client
is django-storages' connection for STORAGES["attachments"], so every AWS_* setting (endpoint,
region, addressing style, credentials) applies.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import threading
import unicodedata
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import storages
from django.db import transaction
from django.utils import timezone

from chat import limits
from chat.errors import UserFacingError
from chat.models import Attachment, Message
from chat.uploads.images import (
    ALLOWED_LABEL,
    KINDS,
    Encoded,
    ImageKind,
    ImageRefused,
    decode,
    reencode,
    sniff,
)

logger = logging.getLogger(__name__)

INVALID = "attachment_invalid"
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
STORAGE_UNAVAILABLE = "storage_unavailable"
BUSY = "busy"
# What a busy answer tells the client to wait before finishing again (Retry-After, seconds).
BUSY_RETRY_AFTER_S = 2
UPLOAD_PREFIX = "uploads/"

# Uploads started but not finished within the presigned POST's lifetime, per user, at most this
# many times IMAGE_MAX_PER_MESSAGE: bounds rows and signatures one user can make.
IN_FLIGHT_FACTOR = 2
CLEANUP_BATCH = 500
MAX_ID = 2**63 - 1


class AttachmentError(UserFacingError):
    """The one error callers catch. `code` is a protocol error code, `message` is for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


def _invalid(message: str) -> AttachmentError:
    return AttachmentError(INVALID, message)


def _size_text(n: int) -> str:
    if n < 1024 * 1024:
        return f"{max(1, round(n / 1024))} KB"
    return f"{n / (1024 * 1024):.1f} MB"


# --- S3 -------------------------------------------------------------------------------------------


def _storage():
    return storages["attachments"]


# One boto3 client per storage, shared by every thread (boto3's clients are thread-safe; its
# sessions and resources are not). django-storages makes a session and resource per thread, and
# under Daphne each request runs on a new thread: that cost 13 MiB and 0.3 s of CPU per request,
# 270 MiB for 20 finishes at once (bench/upload_memory.py).
_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_clients_lock = threading.Lock()


def _client():
    storage = _storage()
    client = _clients.get(storage)
    if client is None:
        with _clients_lock:
            client = _clients.get(storage)
            if client is None:
                client = _clients[storage] = storage.connection.meta.client
    return client


def _bucket() -> str:
    return _storage().bucket_name


def _storage_error(exc: Exception) -> AttachmentError:
    logger.warning("S3 request failed: %s", exc)
    return AttachmentError(STORAGE_UNAVAILABLE, "Image storage is not reachable right now.")


def _head(key: str) -> dict | None:
    """The object's metadata, or None when there is no such object."""
    try:
        return _client().head_object(Bucket=_bucket(), Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise _storage_error(exc) from None
    except BotoCoreError as exc:
        raise _storage_error(exc) from None


def _read(key: str, *, limit: int) -> bytes | None:
    """At most limit + 1 bytes of the object (so a caller sees that it is too big), or None."""
    try:
        response = _client().get_object(Bucket=_bucket(), Key=key)
        body = response["Body"]
        try:
            return body.read(limit + 1)
        finally:
            body.close()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise _storage_error(exc) from None
    except BotoCoreError as exc:
        raise _storage_error(exc) from None


def _write(key: str, data: bytes, content_type: str) -> None:
    try:
        _client().put_object(
            Bucket=_bucket(),
            Key=key,
            Body=data,
            ContentType=content_type,
            CacheControl="private, max-age=86400",
        )
    except (BotoCoreError, ClientError) as exc:
        raise _storage_error(exc) from None


def _delete_objects(keys: list[str]) -> bool:
    """Deletes the objects (missing ones count as deleted); False when S3 could not be reached."""
    client, bucket = _client(), _bucket()
    ok = True
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        try:
            result = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )
        except (BotoCoreError, ClientError) as exc:
            logger.warning("Could not delete %d attachment objects: %s", len(chunk), exc)
            ok = False
            continue
        for error in result.get("Errors", []):
            logger.warning("Could not delete %s: %s", error.get("Key"), error.get("Message"))
            ok = False
    return ok


def _list_objects(prefix: str) -> Iterator[tuple[str, datetime]]:
    """(key, last modified) of every object under the prefix. Raises AttachmentError."""
    try:
        pages = _client().get_paginator("list_objects_v2").paginate(Bucket=_bucket(), Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"], obj["LastModified"]
    except (BotoCoreError, ClientError) as exc:
        raise _storage_error(exc) from None


# --- start ----------------------------------------------------------------------------------------


def display_name(name: object) -> str:
    """A file name fit for display: no directories, control characters or runs of spaces."""
    if not isinstance(name, str):
        return ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    return " ".join(name.split())[:255]


def kind_of(content_type: object) -> ImageKind:
    """The accepted image kind for a declared content type; raises AttachmentError otherwise."""
    if not isinstance(content_type, str):
        raise _invalid(f"Attach an image: {ALLOWED_LABEL}.")
    kind = KINDS.get(content_type.strip().lower())
    if kind is None:
        if "svg" in content_type.lower():
            raise _invalid(f"SVG images are not accepted; use {ALLOWED_LABEL}.")
        raise _invalid(f"Only {ALLOWED_LABEL} images can be attached, not {content_type[:60]!r}.")
    return kind


def start_upload(*, owner, content_type: str, byte_size: int, name: str) -> tuple[Attachment, dict]:
    """Saves a pending attachment and signs the POST the browser uploads it with.

    Returns the row and {"url": …, "fields": …}. The policy pins the bucket, the exact key, the
    exact Content-Type, a content-length-range of 1..IMAGE_UPLOAD_MAX_BYTES and an expiry of
    PRESIGN_POST_EXPIRY_SECONDS. Raises AttachmentError (attachment_invalid, rate_limited,
    storage_unavailable).
    """
    kind = kind_of(content_type)
    max_bytes = settings.IMAGE_UPLOAD_MAX_BYTES
    if isinstance(byte_size, bool) or not isinstance(byte_size, int) or byte_size < 1:
        raise _invalid("byte_size must be the file's size in bytes.")
    if byte_size > max_bytes:
        raise _invalid(
            f"The image is {_size_text(byte_size)}; the limit is {_size_text(max_bytes)}."
        )
    try:
        limits.check_upload_start(user_id=owner.pk)
    except limits.RateLimited as exc:
        raise AttachmentError(RATE_LIMITED, exc.message) from None
    since = timezone.now() - timedelta(seconds=settings.PRESIGN_POST_EXPIRY_SECONDS)
    in_flight = Attachment.objects.filter(
        owner=owner, state=Attachment.State.PENDING, created_at__gte=since
    ).count()
    if in_flight >= IN_FLIGHT_FACTOR * settings.IMAGE_MAX_PER_MESSAGE:
        raise AttachmentError(RATE_LIMITED, "Too many uploads at once; wait for them to finish.")

    key = f"{UPLOAD_PREFIX}{owner.pk}/{uuid.uuid4().hex}.{kind.extension}"
    attachment = Attachment.objects.create(
        owner=owner,
        key=key,
        content_type=kind.content_type,
        byte_size=byte_size,
        original_name=display_name(name),
    )
    try:
        post = _client().generate_presigned_post(
            Bucket=_bucket(),
            Key=key,
            Fields={"Content-Type": kind.content_type},
            Conditions=[
                {"Content-Type": kind.content_type},
                ["content-length-range", 1, max_bytes],
            ],
            ExpiresIn=settings.PRESIGN_POST_EXPIRY_SECONDS,
        )
    except (BotoCoreError, ClientError) as exc:
        attachment.delete()
        raise _storage_error(exc) from None
    return attachment, {"url": post["url"], "fields": post["fields"]}


# --- finish ---------------------------------------------------------------------------------------


class DecodeSlots:
    """At most IMAGE_VERIFY_CONCURRENCY image decodes at once in this process.

    One finish decoding a 6000×4000 JPEG peaked at 374 MB before reduced decoding, and 20 at once
    (one user's in-flight cap) at 3.07 GB, each taking up to 11.9 s. Finish is a synchronous view:
    under Daphne each request runs in a thread of its own, so a slot is a thread-level lock; the
    limit is read on every acquire, so it follows the setting. The counters make the waiting
    observable (log lines, tests) where a BoundedSemaphore would hide them.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.busy = 0
        self.waiting = 0

    def _free(self) -> bool:
        return self.busy < settings.IMAGE_VERIFY_CONCURRENCY

    def acquire(self, *, timeout: float) -> bool:
        with self._changed:
            self.waiting += 1
            self._changed.notify_all()
            try:
                if not self._changed.wait_for(self._free, timeout=timeout):
                    return False
                self.busy += 1
                return True
            finally:
                self.waiting -= 1
                self._changed.notify_all()

    def release(self) -> None:
        with self._changed:
            self.busy -= 1
            self._changed.notify_all()

    def wait_until(self, predicate, *, timeout: float) -> bool:
        """Waits until predicate(self) holds (checked after each change); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout=timeout)


decode_slots = DecodeSlots()


@contextmanager
def decode_slot() -> Iterator[None]:
    """Holds one decode slot; raises AttachmentError(busy) when none frees up within
    IMAGE_VERIFY_WAIT_SECONDS (the upload stays pending: finish may be retried)."""
    if not decode_slots.acquire(timeout=settings.IMAGE_VERIFY_WAIT_SECONDS):
        logger.warning(
            "Image check refused: %d decoding, %d waiting", decode_slots.busy, decode_slots.waiting
        )
        raise AttachmentError(
            BUSY, "The server is busy checking other images; this one will be checked shortly."
        )
    try:
        yield
    finally:
        decode_slots.release()


def _verify(attachment: Attachment) -> Encoded:
    """Checks the uploaded object and replaces it with a clean re-encoding. Raises AttachmentError.

    Order: key shape → HEAD (exists, size, type) → a decode slot → read (bounded) → magic bytes →
    Pillow open (four formats, pixel limit before decoding) → decode (reduced for a large JPEG)
    → re-encode → write to the verified key. The clean copy lives under another key than the
    upload, so the upload's presigned POST (valid for minutes) can never overwrite what was
    verified.
    """
    kind = kind_of(attachment.content_type)
    max_bytes = settings.IMAGE_UPLOAD_MAX_BYTES
    head = _head(attachment.key)
    if head is None:
        raise _invalid("No file was uploaded.")
    size = int(head.get("ContentLength", 0))
    if size < 1 or size > max_bytes:
        raise _invalid(f"The file is {_size_text(size)}; the limit is {_size_text(max_bytes)}.")
    if size != attachment.byte_size:
        raise _invalid("The uploaded file is not the size that was declared.")
    if (head.get("ContentType") or "").lower() != kind.content_type:
        raise _invalid(f"The file was not uploaded as a {kind.label} image.")
    # The read is inside the slot too: a waiting finish then holds no bytes (up to 20 MB each).
    with decode_slot():
        encoded = _read_and_reencode(attachment.key, kind, size=size)
    _write(verified_key(attachment.key), encoded.data, kind.content_type)
    return encoded


def _read_and_reencode(key: str, kind: ImageKind, *, size: int) -> Encoded:
    """The object's bytes, checked and re-encoded; nothing large outlives the call."""
    # At most the size HEAD gave (checked against the limit) + 1: the HTTP layer allocates a
    # buffer of the size asked for, which was 20 MB for every image when this asked for the limit.
    data = _read(key, limit=size)
    if data is None:
        raise _invalid("No file was uploaded.")
    if len(data) != size:
        raise _invalid("The uploaded file changed while it was being checked.")
    if sniff(data) != kind.content_type:
        raise _invalid(f"The file's contents are not a {kind.label} image.")
    try:
        return reencode(decode(data, kind, fit_edge=settings.IMAGE_LONG_EDGE_PX), kind)
    except ImageRefused as exc:
        raise _invalid(str(exc)) from None


def verified_key(upload_key: str) -> str:
    """`uploads/<user>/<uuid>.<ext>` → `images/<user>/<uuid>.<ext>`."""
    return "images/" + upload_key.removeprefix("uploads/")


def _owned(owner, attachment_id: object) -> Attachment:
    not_found = AttachmentError(NOT_FOUND, "No such attachment.")
    if isinstance(attachment_id, bool) or not isinstance(attachment_id, int):
        raise not_found
    if not 0 < attachment_id <= MAX_ID:
        raise not_found
    try:
        return Attachment.objects.get(pk=attachment_id, owner=owner)
    except Attachment.DoesNotExist:
        raise not_found from None


def _settle(attachment: Attachment, **outcome) -> None:
    """Records the outcome if the row is still pending; raises AttachmentError if it is not.

    No transaction is held while S3 and Pillow work (SQLite would refuse the late write of a
    long one): the conditional UPDATE decides between concurrent finishes and a cancel.
    """
    updated = Attachment.objects.filter(pk=attachment.pk, state=Attachment.State.PENDING).update(
        **outcome
    )
    if updated:
        for field, value in outcome.items():
            setattr(attachment, field, value)
        return
    if not Attachment.objects.filter(pk=attachment.pk).exists():
        # Cancelled meanwhile: what this finish wrote back must not outlive the row.
        _delete_objects([attachment.key])
        raise AttachmentError(NOT_FOUND, "No such attachment.")
    raise _invalid("This upload has already been finished.")


def finish_upload(*, owner, attachment_id: int) -> Attachment:
    """Verifies the owner's pending upload; returns it verified, with size, pixels and sha256.

    Raises AttachmentError: not_found (missing or someone else's), attachment_invalid (already
    finished, or the file is refused: the row is then rejected with the reason and the object
    deleted), storage_unavailable (S3 unreachable) and busy (no decode slot in time): for these
    two the row stays pending and finish may be retried.
    """
    attachment = _owned(owner, attachment_id)
    if attachment.state == Attachment.State.VERIFIED:
        raise _invalid("This upload has already been finished.")
    if attachment.state == Attachment.State.REJECTED:
        raise _invalid(f"This upload was refused: {attachment.reject_reason}")
    if not attachment.key.startswith(f"{UPLOAD_PREFIX}{owner.pk}/"):
        # Keys are made by start_upload; another shape is someone else's object: leave it.
        raise _invalid("This upload does not belong to you.")
    try:
        encoded = _verify(attachment)
    except AttachmentError as exc:
        if exc.code != INVALID:
            raise
        _settle(attachment, state=Attachment.State.REJECTED, reject_reason=exc.message[:200])
        # A failed delete leaves the object to cleanup_unsent, which deletes rejected rows too.
        _delete_objects([attachment.key])
        logger.info("Attachment %s rejected: %s", attachment.pk, exc.message)
        raise
    upload_key = attachment.key
    try:
        _settle(
            attachment,
            key=verified_key(upload_key),
            state=Attachment.State.VERIFIED,
            width=encoded.width,
            height=encoded.height,
            byte_size=len(encoded.data),
            sha256=hashlib.sha256(encoded.data).hexdigest(),
            verified_at=timezone.now(),
        )
    except AttachmentError:
        _delete_objects([verified_key(upload_key)])
        raise
    _delete_objects([upload_key])
    return attachment


# --- cancel and cleanup ---------------------------------------------------------------------------


def cancel_upload(*, owner, attachment_id: int) -> None:
    """Deletes the owner's attachment (object and row) unless it has been sent.

    Raises AttachmentError: not_found, attachment_invalid (already sent).
    """
    attachment = _owned(owner, attachment_id)
    deleted, _ = Attachment.objects.filter(pk=attachment.pk, message__isnull=True).delete()
    if not deleted:
        if Attachment.objects.filter(pk=attachment.pk).exists():
            raise _invalid("This image has been sent and cannot be removed.")
        raise AttachmentError(NOT_FOUND, "No such attachment.")
    _delete_objects([attachment.key])


def delete_attachments(attachments) -> None:
    """Deletes rows and their objects, whatever their state (for admins)."""
    keys = [a.key for a in attachments]
    Attachment.objects.filter(pk__in=[a.pk for a in attachments]).delete()
    _delete_objects(keys)


def cleanup_unsent(*, older_than_hours: int) -> int:
    """Deletes attachments never attached to a message and older than that; returns how many.

    Rows go first, each only if still unsent (a conditional DELETE), then the objects of the
    rows that are gone: an image sent meanwhile keeps its object.
    """
    cutoff = timezone.now() - timedelta(hours=older_than_hours)
    unsent = Attachment.objects.filter(message__isnull=True, created_at__lt=cutoff)
    deleted = 0
    while True:
        rows = dict(unsent.order_by("pk").values_list("pk", "key")[:CLEANUP_BATCH])
        if not rows:
            return deleted
        unsent.filter(pk__in=rows).delete()
        kept = set(Attachment.objects.filter(pk__in=rows).values_list("pk", flat=True))
        gone = [key for pk, key in rows.items() if pk not in kept]
        _delete_objects(gone)
        deleted += len(gone)


def cleanup_orphan_uploads(*, now: datetime | None = None) -> int:
    """Deletes objects under uploads/ that no attachment row owns; returns how many.

    Such objects are files posted again with an upload's signature after the upload was
    verified (its row then points at images/…) or its row was deleted. Only objects older than
    PRESIGN_POST_EXPIRY_SECONDS go: by then no signature can write that key again, and an upload
    whose row is not visible yet is never touched. The listing comes before the query of the
    rows, so a row made meanwhile has a key the listing could not contain. `now` (S3's clock is
    compared with it) is this moment unless given. Raises AttachmentError (storage_unavailable).
    """
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.PRESIGN_POST_EXPIRY_SECONDS)
    old = [key for key, modified in _list_objects(UPLOAD_PREFIX) if modified < cutoff]
    deleted = 0
    for start in range(0, len(old), CLEANUP_BATCH):
        batch = old[start : start + CLEANUP_BATCH]
        owned = set(Attachment.objects.filter(key__in=batch).values_list("key", flat=True))
        orphans = [key for key in batch if key not in owned]
        if orphans and _delete_objects(orphans):
            deleted += len(orphans)
    return deleted


# --- send -----------------------------------------------------------------------------------------


def verified_for_send(*, owner, ids: list) -> list[Attachment]:
    """The owner's verified, unsent attachments with these ids, in the order given.

    ids must be distinct ints, at most IMAGE_MAX_PER_MESSAGE. Raises
    AttachmentError("attachment_invalid", …) otherwise; someone else's id gets the same answer
    as a missing one. Inside a transaction the rows are locked until it ends.
    """
    if not isinstance(ids, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
        raise _invalid("attachments must be a list of attachment ids.")
    if len(set(ids)) != len(ids):
        raise _invalid("The same image is attached twice.")
    limit = settings.IMAGE_MAX_PER_MESSAGE
    if len(ids) > limit:
        raise _invalid(f"At most {limit} images can be sent with one message.")
    if not ids:
        return []
    queryset = Attachment.objects.filter(
        owner=owner,
        pk__in=[i for i in ids if 0 < i <= MAX_ID],
        state=Attachment.State.VERIFIED,
        message__isnull=True,
    )
    if transaction.get_connection().in_atomic_block:
        queryset = queryset.select_for_update()
    found = {a.pk: a for a in queryset}
    if len(found) != len(ids):
        raise _invalid(
            "An attached image cannot be used: it is missing, not verified yet, or already "
            "sent. Attach it again."
        )
    return [found[i] for i in ids]


def attach_to_message(*, attachments: list[Attachment], message: Message) -> None:
    """Marks the attachments as sent with the message. Raises AttachmentError if one was taken."""
    if not attachments:
        return
    updated = Attachment.objects.filter(
        pk__in=[a.pk for a in attachments],
        owner_id=message.conversation.owner_id,
        state=Attachment.State.VERIFIED,
        message__isnull=True,
    ).update(message=message)
    if updated != len(attachments):
        raise _invalid("An attached image was already sent. Attach it again.")
    for attachment in attachments:
        attachment.message = message


def message_image_ref(attachment: Attachment) -> dict:
    """The image block stored in a saved Message's content (image_block makes the API's form)."""
    return {
        "type": "image",
        "attachment_id": attachment.pk,
        "media_type": attachment.content_type,
        "width": attachment.width,
        "height": attachment.height,
    }


# --- read -----------------------------------------------------------------------------------------


def presigned_get_url(attachment: Attachment, *, expires_in: int | None = None) -> str:
    """A fresh, short-lived GET URL; the response's Content-Type is pinned to the verified type."""
    try:
        return _client().generate_presigned_url(
            "get_object",
            Params={
                "Bucket": _bucket(),
                "Key": attachment.key,
                "ResponseContentType": attachment.content_type,
            },
            ExpiresIn=expires_in or settings.PRESIGN_GET_EXPIRY_SECONDS,
        )
    except (BotoCoreError, ClientError) as exc:
        raise _storage_error(exc) from None


PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


def endpoint_is_private(endpoint_url: str | None) -> bool:
    """True when the S3 endpoint cannot be reached from the internet (so Claude cannot fetch)."""
    if not endpoint_url:
        return False
    host = (urlsplit(endpoint_url).hostname or "").lower().rstrip(".")
    if not host or host == "localhost" or host.endswith(PRIVATE_SUFFIXES) or "." not in host:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


def delivery_mode() -> str:
    """ "url" or "base64", from IMAGE_DELIVERY ("auto" decides by the endpoint's host)."""
    mode = settings.IMAGE_DELIVERY
    if mode in ("url", "base64"):
        return mode
    if mode != "auto":
        raise ImproperlyConfigured(f"IMAGE_DELIVERY must be auto, url or base64, not {mode!r}")
    return "base64" if endpoint_is_private(settings.AWS_S3_ENDPOINT_URL) else "url"


def image_block(attachment: Attachment) -> dict:
    """The Messages API image block: a fresh presigned GET URL, or the bytes in base64.

    Base64 reads the object and checks it against the recorded sha256. Raises AttachmentError
    (attachment_invalid when the image is not verified, missing or changed; storage_unavailable).
    """
    if attachment.state != Attachment.State.VERIFIED:
        raise _invalid("The image has not been verified.")
    if delivery_mode() == "url":
        return {"type": "image", "source": {"type": "url", "url": presigned_get_url(attachment)}}
    data = _read(attachment.key, limit=max(settings.IMAGE_STORED_MAX_BYTES, attachment.byte_size))
    if data is None or hashlib.sha256(data).hexdigest() != attachment.sha256:
        raise _invalid("An attached image is no longer available. Attach it again.")
    return {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": attachment.content_type,
            "data": base64.b64encode(data).decode("ascii"),
        },
    }
