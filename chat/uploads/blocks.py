"""Image blocks: the reference a saved message stores, and the Messages API block sent to Claude.

`image_block` delivers an image as a fresh presigned GET URL, or as base64 when Claude could not
reach the S3 endpoint (IMAGE_DELIVERY, `delivery_mode`).
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


def message_image_ref(attachment: Attachment) -> dict:
    """The image block stored in a saved Message's content (image_block makes the API's form)."""
    return {
        "type": "image",
        "attachment_id": attachment.pk,
        "media_type": attachment.content_type,
        "width": attachment.width,
        "height": attachment.height,
    }


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
