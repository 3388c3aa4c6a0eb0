"""Images and documents attached to messages: the upload's lifecycle.

start → upload → finish. `start_upload` saves a pending row and signs a presigned POST for a key
the server makes; the browser posts the file straight to S3; `finish_upload` has it checked
(chat/uploads/verification.py: an image re-encoded, a document checked), the clean bytes stored
under another key (`images/…`, `documents/…`), and deletes the upload. Only verified
attachments may be sent (`verified_for_send`, `attach_to_message`); `cancel_upload` and the
cleanups delete rows and objects.

Callers see `Attachment` rows, plain dicts and one error type, `AttachmentError`
(chat/uploads/errors.py); every S3 call is in chat/uploads/storage.py, the Pillow work in
chat/uploads/images.py, the PDF and text checks in chat/uploads/documents.py, the blocks sent
to Claude in chat/uploads/blocks.py.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chat import limits, policies
from chat.models import Attachment, Message
from chat.uploads import storage
from chat.uploads.errors import INVALID, NOT_FOUND, RATE_LIMITED, AttachmentError, invalid
from chat.uploads.verification import (
    attachment_kind,
    kind_of,
    max_bytes,
    noun,
    row_fields,
    size_text,
    verified_key,
    verify_upload,
)

log = logging.getLogger(__name__)


UPLOAD_PREFIX = "uploads/"
# Uploads started but not finished within the presigned POST's lifetime, per user, at most this
# many times IMAGE_MAX_PER_MESSAGE: bounds rows and signatures one user can make.
IN_FLIGHT_FACTOR = 2
CLEANUP_BATCH = 500
MAX_ID = 2**63 - 1


def display_name(name: object) -> str:
    """A file name fit for display: no directories, control characters or runs of spaces."""
    if not isinstance(name, str):
        return ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    return " ".join(name.split())[:255]


def start_upload(*, owner, content_type: str, byte_size: int, name: str) -> tuple[Attachment, dict]:
    """Saves a pending attachment and signs the POST the browser uploads it with.

    Returns the row and {"url": …, "fields": …}. The policy pins the bucket, the exact key, the
    exact Content-Type, a content-length-range of 1..the kind's limit (IMAGE_UPLOAD_MAX_BYTES,
    DOCUMENT_MAX_BYTES for a PDF, TEXT_DOCUMENT_MAX_BYTES for text) and an expiry of
    PRESIGN_POST_EXPIRY_SECONDS — the owner's policy may lower that limit and refuse
    documents. Raises AttachmentError (attachment_invalid, rate_limited, storage_unavailable) or
    policies.Forbidden (a document or a size the policy does not allow).
    """
    kind = kind_of(content_type)
    server_limit = max_bytes(kind)
    if isinstance(byte_size, bool) or not isinstance(byte_size, int) or byte_size < 1:
        raise invalid("byte_size must be the file's size in bytes.")
    if byte_size > server_limit:
        raise invalid(
            f"The {noun(kind)} is {size_text(byte_size)}; the limit is {size_text(server_limit)}."
        )
    policy = policies.policy_for(owner)
    if attachment_kind(kind) == Attachment.Kind.DOCUMENT:
        policy.check_documents()
    limit = policy.file_bytes(server_limit)
    if byte_size > limit:
        raise policies.Forbidden(
            f"The {noun(kind)} is {size_text(byte_size)}; you may upload files of at most "
            f"{size_text(limit)}."
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
        kind=attachment_kind(kind),
        content_type=kind.content_type,
        byte_size=byte_size,
        original_name=display_name(name),
    )
    try:
        post = storage.presigned_post(key, content_type=kind.content_type, max_bytes=limit)
    except AttachmentError:
        attachment.delete()
        raise
    return attachment, post


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
        storage.delete_objects([attachment.key])
        raise AttachmentError(NOT_FOUND, "No such attachment.")
    raise invalid("This upload has already been finished.")


def finish_upload(*, owner, attachment_id: int) -> Attachment:
    """Verifies the owner's pending upload; returns it verified, with size, sha256, and pixels
    (an image) or pages and text layer (a PDF). The owner's policy is checked again (it may
    have changed since the start): a document where none is allowed, or an upload larger than
    the policy's limit, raises policies.Forbidden and the upload stays pending.

    Raises AttachmentError: not_found (missing or someone else's), attachment_invalid (already
    finished, or the file is refused: the row is then rejected with the reason and the object
    deleted), storage_unavailable (S3 unreachable) and busy (no decode slot in time): for these
    two the row stays pending and finish may be retried.
    """
    attachment = _owned(owner, attachment_id)
    if attachment.state == Attachment.State.VERIFIED:
        raise invalid("This upload has already been finished.")
    if attachment.state == Attachment.State.REJECTED:
        raise invalid(f"This upload was refused: {attachment.reject_reason}")
    if not attachment.key.startswith(f"{UPLOAD_PREFIX}{owner.pk}/"):
        # Keys are made by start_upload; another shape is someone else's object: leave it.
        raise invalid("This upload does not belong to you.")
    policy = policies.policy_for(owner)
    if attachment.kind == Attachment.Kind.DOCUMENT:
        policy.check_documents()
    limit = policy.file_bytes(attachment.max_upload_bytes)
    if attachment.byte_size > limit:
        raise policies.Forbidden(f"You may upload files of at most {size_text(limit)}.")
    try:
        clean = verify_upload(attachment)
    except AttachmentError as exc:
        if exc.code != INVALID:
            raise
        _settle(attachment, state=Attachment.State.REJECTED, reject_reason=exc.message[:200])
        # A failed delete leaves the object to cleanup_unsent, which deletes rejected rows too.
        storage.delete_objects([attachment.key])
        log.info("Attachment %s rejected: %s", attachment.pk, exc.message)
        raise
    upload_key = attachment.key
    try:
        _settle(
            attachment,
            key=verified_key(upload_key),
            state=Attachment.State.VERIFIED,
            byte_size=len(clean.data),
            sha256=hashlib.sha256(clean.data).hexdigest(),
            verified_at=timezone.now(),
            **row_fields(clean),
        )
    except AttachmentError:
        storage.delete_objects([verified_key(upload_key)])
        raise
    storage.delete_objects([upload_key])
    return attachment


def cancel_upload(*, owner, attachment_id: int) -> None:
    """Deletes the owner's attachment (object and row) unless it has been sent.

    Raises AttachmentError: not_found, attachment_invalid (already sent).
    """
    attachment = _owned(owner, attachment_id)
    deleted, _ = Attachment.objects.filter(pk=attachment.pk, message__isnull=True).delete()
    if not deleted:
        if Attachment.objects.filter(pk=attachment.pk).exists():
            raise invalid("This file has been sent and cannot be removed.")
        raise AttachmentError(NOT_FOUND, "No such attachment.")
    storage.delete_objects([attachment.key])


def delete_attachments(attachments) -> None:
    """Deletes rows and their objects, whatever their state (for admins)."""
    keys = [a.key for a in attachments]
    Attachment.objects.filter(pk__in=[a.pk for a in attachments]).delete()
    storage.delete_objects(keys)


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
        storage.delete_objects(gone)
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
    old = [key for key, modified in storage.list_objects(UPLOAD_PREFIX) if modified < cutoff]
    deleted = 0
    for start in range(0, len(old), CLEANUP_BATCH):
        batch = old[start : start + CLEANUP_BATCH]
        owned = set(Attachment.objects.filter(key__in=batch).values_list("key", flat=True))
        orphans = [key for key in batch if key not in owned]
        if orphans and storage.delete_objects(orphans):
            deleted += len(orphans)
    return deleted


def verified_for_send(
    *,
    owner,
    ids: list,
    kinds: tuple[str, ...] = (Attachment.Kind.IMAGE,),
    policy: policies.Policy = policies.UNRESTRICTED,
) -> list[Attachment]:
    """The owner's verified, unsent attachments with these ids, in the order given.

    ids must be distinct ints, at most IMAGE_MAX_PER_MESSAGE, each of one of `kinds`. Raises
    AttachmentError("attachment_invalid", …) otherwise; someone else's id gets the same answer
    as a missing one. Inside a transaction the rows are locked until it ends. `kinds` is images
    alone unless the caller sends documents as well (Attachment.Kind.DOCUMENT): a caller that
    makes image blocks of what it gets must never get a document. `policy` (the owner's) may
    allow fewer files or no documents: policies.Forbidden.
    """
    if not isinstance(ids, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
        raise invalid("attachments must be a list of attachment ids.")
    if len(set(ids)) != len(ids):
        raise invalid("The same file is attached twice.")
    limit = settings.IMAGE_MAX_PER_MESSAGE
    if len(ids) > limit:
        raise invalid(f"At most {limit} files can be sent with one message.")
    policy.check_file_count(len(ids))
    if not ids:
        return []
    queryset = Attachment.objects.filter(
        owner=owner,
        pk__in=[i for i in ids if 0 < i <= MAX_ID],
        state=Attachment.State.VERIFIED,
        kind__in=kinds,
        message__isnull=True,
    )
    if transaction.get_connection().in_atomic_block:
        queryset = queryset.select_for_update()
    found = {a.pk: a for a in queryset}
    if len(found) != len(ids):
        raise invalid(
            "An attached file cannot be used: it is missing, not verified yet, or already "
            "sent. Attach it again."
        )
    if any(a.kind == Attachment.Kind.DOCUMENT for a in found.values()):
        policy.check_documents()
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
        raise invalid("An attached file was already sent. Attach it again.")
    for attachment in attachments:
        attachment.message = message
