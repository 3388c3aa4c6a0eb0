"""Images for the upload tests, and the browser's side of a direct upload to S3."""

from __future__ import annotations

import io
import os

import requests
from botocore.exceptions import ClientError
from django.conf import settings
from PIL import Image

from chat.uploads import attachments


def stored(s3, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=settings.AWS_STORAGE_BUCKET_NAME, Key=key)["Body"].read()
    except ClientError:
        return None


def image_bytes(fmt="PNG", size=(64, 48), mode="RGB", noise=False, **save) -> bytes:
    if noise:
        img = Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode)))
    else:
        img = Image.new(mode, size, "#c05020" if mode != "1" else 0)
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def upload(post: dict, data: bytes, content_type: str | None = None, *, timeout=10) -> None:
    """Posts the file as a browser does: the signed fields, then the file."""
    fields = dict(post["fields"])
    if content_type:
        fields["Content-Type"] = content_type
    response = requests.post(post["url"], data=fields, files={"file": ("f", data)}, timeout=timeout)
    assert response.status_code in (200, 201, 204), response.text


def started(owner, data: bytes, content_type="image/png", byte_size=None, name="photo.png"):
    attachment, post = attachments.start_upload(
        owner=owner,
        content_type=content_type,
        byte_size=len(data) if byte_size is None else byte_size,
        name=name,
    )
    return attachment, post


def verified_file(owner, data: bytes, content_type: str, name: str):
    """An attachment of `owner` through the whole flow (start, upload to S3, finish), verified."""
    attachment, post = started(owner, data, content_type, name=name)
    upload(post, data, timeout=30)
    return attachments.finish_upload(owner=owner, attachment_id=attachment.pk)
