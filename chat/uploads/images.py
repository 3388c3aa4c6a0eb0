"""Image bytes in, clean image bytes out: the Pillow side of attachments (no S3 here).

`decode` refuses anything but a whole JPEG, PNG, GIF or WebP of the declared kind within the
pixel limit; `reencode` writes it again in the same format, small enough, with no metadata.
Both raise `ImageRefused` with a message for the user; chat/uploads/verification.py turns it into
an AttachmentError.

Memory: a decoded image takes 3–4 bytes per pixel (a 6000×4000 photo: 72 MB as RGB), so decode
asks libjpeg for a reduced decode (1/2, 1/4 or 1/8, never below the stored size) and no step
makes a second full-size copy; chat/uploads/verification.py bounds how many decodes run at once.
"""

from __future__ import annotations

import io
import logging
import math
import struct
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

# JPEG and WebP quality steps tried in turn before the image is made smaller.
QUALITY_STEPS = (85, 75, 65, 50)
# When no quality fits the byte limit, the long edge shrinks by this factor and encoding repeats.
SHRINK_FACTOR = 0.75
SMALLEST_EDGE_PX = 16


class ImageRefused(ValueError):
    """The file is not an acceptable image; str(exc) says why, for the user."""


@dataclass(frozen=True)
class ImageKind:
    content_type: str
    extension: str
    pil_format: str
    label: str


KINDS = {
    kind.content_type: kind
    for kind in (
        ImageKind("image/jpeg", "jpg", "JPEG", "JPEG"),
        ImageKind("image/png", "png", "PNG", "PNG"),
        ImageKind("image/gif", "gif", "GIF", "GIF"),
        ImageKind("image/webp", "webp", "WEBP", "WebP"),
    )
}
PIL_FORMATS = [kind.pil_format for kind in KINDS.values()]
# Pillow's own, process-wide guard (a warning above it, DecompressionBombError above twice it).
# decode checks the setting itself too, from the image's header, before decoding a pixel.
Image.MAX_IMAGE_PIXELS = settings.IMAGE_MAX_PIXELS
ALLOWED_LABEL = "JPEG, PNG, GIF or WebP"


def sniff(data: bytes) -> str | None:
    """The image content type the file's first bytes announce, if any of the accepted four."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class Encoded:
    data: bytes
    width: int
    height: int


def decode(data: bytes, kind: ImageKind, *, fit_edge: int | None = None) -> Image.Image:
    """The first frame, fully loaded, orientation applied. Raises ImageRefused.

    The pixel limit is checked on the header's size, before any pixel is decoded. With
    `fit_edge`, a JPEG is decoded at the smallest of 1/1, 1/2, 1/4 or 1/8 of its size whose long
    edge is still at least `fit_edge` (libjpeg scales in the DCT: the pixels never exist at full
    size), so a later exact resize to that edge loses nothing; other formats decode whole.
    """
    max_pixels = settings.IMAGE_MAX_PIXELS
    too_many = ImageRefused(f"The image has too many pixels; the limit is {max_pixels:,}.")
    try:
        with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as img:
            if img.format != kind.pil_format:
                raise ImageRefused(f"The file is not a {kind.label} image.")
            width, height = img.size
            if width < 1 or height < 1:
                raise ImageRefused("The image has no pixels.")
            if width * height > max_pixels:
                raise too_many
            if fit_edge and img.format == "JPEG":
                img.draft("RGB", _draft_size(width, height, fit_edge))
            img.load()
            # In place: a copy would double the memory of the largest image in the process.
            ImageOps.exif_transpose(img, in_place=True)
            return img
    except Image.DecompressionBombError:
        raise too_many from None
    except ImageRefused:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError) as exc:
        logger.info("Undecodable %s upload: %s", kind.label, exc)
        raise ImageRefused(
            f"The image could not be read: the {kind.label} file is damaged."
        ) from None


def _draft_size(width: int, height: int, edge: int) -> tuple[int, int]:
    """The size the image will be resized to (long edge `edge`, never enlarged), rounded up:
    a draft decode picks the largest reduction that stays at or above it on both sides."""
    scale = min(1.0, edge / max(width, height))
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info


def _normalise(img: Image.Image, kind: ImageKind) -> Image.Image:
    """The image in a mode the target format stores well (the same object when it already is
    in that mode), with no metadata (EXIF, ICC, XMP…)."""
    try:
        if img.mode.startswith("I;16") or img.mode in ("I", "F"):
            img = img.convert("I").point(lambda v: v / 256).convert("L")
        if kind.pil_format == "JPEG":
            target = "L" if img.mode in ("1", "L") else "RGB"
        elif _has_alpha(img):
            target = "RGBA"
        elif img.mode in ("1", "L") and kind.pil_format != "WEBP":
            target = "L"
        else:
            target = "RGB"
        # convert() to the same mode would copy the whole image for nothing.
        clean = img if img.mode == target else img.convert(target)
    except ValueError as exc:
        raise ImageRefused(f"The image's colour mode {img.mode} is not supported.") from exc
    clean.info = {}
    return clean


def _to_gif(img: Image.Image, out: io.BytesIO) -> None:
    """One GIF frame; pixels less than half opaque become the transparent colour."""
    if img.mode != "RGBA":
        img.save(out, "GIF")
        return
    alpha = img.getchannel("A")
    frame = img.convert("RGB").quantize(colors=255)
    frame.paste(255, mask=alpha.point(lambda a: 255 if a < 128 else 0))
    frame.save(out, "GIF", transparency=255)


def _encode_once(img: Image.Image, kind: ImageKind, quality: int) -> bytes:
    out = io.BytesIO()
    if kind.pil_format == "JPEG":
        img.save(out, "JPEG", quality=quality, optimize=True)
    elif kind.pil_format == "WEBP":
        img.save(out, "WEBP", quality=quality, method=4)
    elif kind.pil_format == "PNG":
        img.save(out, "PNG", compress_level=6)
    else:
        _to_gif(img, out)
    return out.getvalue()


def reencode(img: Image.Image, kind: ImageKind) -> Encoded:
    """The image in its own format: long edge ≤ IMAGE_LONG_EDGE_PX, ≤ IMAGE_STORED_MAX_BYTES.

    JPEG and WEBP step their quality down, then shrink; PNG and GIF (lossless here) shrink.
    Raises ImageRefused when even a tiny version does not fit.
    """
    img = _normalise(img, kind)
    edge = settings.IMAGE_LONG_EDGE_PX
    img.thumbnail((edge, edge), Image.Resampling.LANCZOS)
    limit = settings.IMAGE_STORED_MAX_BYTES
    lossy = kind.pil_format in ("JPEG", "WEBP")
    while True:
        for quality in QUALITY_STEPS if lossy else QUALITY_STEPS[:1]:
            data = _encode_once(img, kind, quality)
            if len(data) <= limit:
                return Encoded(data, img.width, img.height)
        if max(img.size) <= SMALLEST_EDGE_PX:
            raise ImageRefused("The image cannot be stored within the size limit.")
        size = (max(1, int(img.width * SHRINK_FACTOR)), max(1, int(img.height * SHRINK_FACTOR)))
        img = img.resize(size, Image.Resampling.LANCZOS)
