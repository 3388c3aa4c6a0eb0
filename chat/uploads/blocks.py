"""Image and document blocks: the reference a saved message stores, and the Messages API block.

`image_block` delivers an image as a fresh presigned GET URL, or as base64 when Claude could not
reach the S3 endpoint (IMAGE_DELIVERY, `delivery_mode`); `document_block` a PDF the same way, and
a text file as a `text` source. Documents ask for citations.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from chat.models import Attachment
from chat.uploads import storage
from chat.uploads.errors import invalid

# The API's title is "limited in length" (Citations page); file names are at most 255 characters.
TITLE_MAX_CHARS = 255


def message_image_ref(attachment: Attachment) -> dict:
    """The image block stored in a saved Message's content (image_block makes the API's form)."""
    return {
        "type": "image",
        "attachment_id": attachment.pk,
        "media_type": attachment.content_type,
        "width": attachment.width,
        "height": attachment.height,
    }


def message_document_ref(attachment: Attachment) -> dict:
    """The document block stored in a saved Message's content (document_block makes the API's)."""
    ref = {
        "type": "document",
        "attachment_id": attachment.pk,
        "media_type": attachment.content_type,
        "title": attachment.original_name,
    }
    if attachment.page_count is not None:
        ref["page_count"] = attachment.page_count
    if attachment.token_estimate is not None:
        ref["token_estimate"] = attachment.token_estimate
    return ref


def message_attachment_ref(attachment: Attachment) -> dict:
    """The stored block of an image or a document."""
    if attachment.kind == Attachment.Kind.DOCUMENT:
        return message_document_ref(attachment)
    return message_image_ref(attachment)


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
        raise invalid("The image has not been verified.")
    if delivery_mode() == "url":
        url = storage.presigned_get_url(attachment)
        return {"type": "image", "source": {"type": "url", "url": url}}
    data = storage.read(
        attachment.key, limit=max(settings.IMAGE_STORED_MAX_BYTES, attachment.byte_size)
    )
    if data is None or hashlib.sha256(data).hexdigest() != attachment.sha256:
        raise invalid("An attached image is no longer available. Attach it again.")
    return {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": attachment.content_type,
            "data": base64.b64encode(data).decode("ascii"),
        },
    }


def _verified_bytes(attachment: Attachment, *, limit: int, what: str) -> bytes:
    """The stored object, checked against the recorded sha256. Raises AttachmentError."""
    data = storage.read(attachment.key, limit=max(limit, attachment.byte_size or 0))
    if data is None or hashlib.sha256(data).hexdigest() != attachment.sha256:
        raise invalid(f"An attached {what} is no longer available. Attach it again.")
    return data


def document_block(attachment: Attachment) -> dict:
    """The Messages API document block, citations enabled, titled with the file's name.

    A PDF is a fresh presigned GET URL or base64 (`delivery_mode`, as images); plain text and
    Markdown are a `text` source (the API takes text/plain only; Markdown is plain text to it),
    read from the object and checked against the recorded sha256. Raises AttachmentError
    (attachment_invalid when the document is not verified, missing or changed;
    storage_unavailable).
    """
    if attachment.state != Attachment.State.VERIFIED or attachment.kind != Attachment.Kind.DOCUMENT:
        raise invalid("The document has not been verified.")
    if attachment.content_type != "application/pdf":
        data = _verified_bytes(attachment, limit=settings.TEXT_DOCUMENT_MAX_BYTES, what="document")
        # utf-8-sig: a byte-order mark is not part of the text Claude cites.
        source = {"type": "text", "media_type": "text/plain", "data": data.decode("utf-8-sig")}
    elif delivery_mode() == "url":
        source = {"type": "url", "url": storage.presigned_get_url(attachment)}
    else:
        data = _verified_bytes(attachment, limit=settings.DOCUMENT_MAX_BYTES, what="document")
        source = {
            "type": "base64",
            "media_type": "application/pdf",
            "data": base64.b64encode(data).decode("ascii"),
        }
    block = {"type": "document", "source": source, "citations": {"enabled": True}}
    if attachment.original_name:
        block["title"] = attachment.original_name[:TITLE_MAX_CHARS]
    return block


def attachment_block(attachment: Attachment) -> dict:
    """The Messages API block of an image or a document."""
    if attachment.kind == Attachment.Kind.DOCUMENT:
        return document_block(attachment)
    return image_block(attachment)
