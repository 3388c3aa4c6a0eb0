"""PDFs written by hand for the document tests: sound ones and every way one can be hostile."""

from __future__ import annotations

import io
import zlib

from pypdf import PdfReader, PdfWriter

FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def stream(data: bytes, *, extra: bytes = b"", compress: bool = False) -> bytes:
    if compress:
        data = zlib.compress(data, 9)
        extra += b" /Filter /FlateDecode"
    return b"<< /Length %d%s >>\nstream\n%s\nendstream" % (len(data), extra, data)


def assemble(objects: dict[int, bytes], *, root: int = 1, trailer: bytes = b"") -> bytes:
    """A PDF of these numbered objects with a correct cross-reference table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, objects[number]))
    size = max(objects) + 1
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    for number in range(1, size):
        if number in offsets:
            out.write(b"%010d 00000 n \n" % offsets[number])
        else:
            out.write(b"0000000000 65535 f \n")
    out.write(b"trailer\n<< /Size %d /Root %d 0 R%s >>\n" % (size, root, trailer))
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def text_pdf(pages: int = 1, text: str = "Hello from page", *, count: int | None = None) -> bytes:
    """A PDF of `pages` pages, each with a line of text in Helvetica; /Count may lie."""
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>", 3: FONT}
    kids = []
    for index in range(pages):
        page, content = 4 + 2 * index, 5 + 2 * index
        line = f"BT /F1 24 Tf 72 720 Td ({text} {index + 1}) Tj ET".encode()
        objects[content] = stream(line)
        objects[page] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % content
        )
        kids.append(b"%d 0 R" % page)
    objects[2] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(kids),
        pages if count is None else count,
    )
    return assemble(objects)


def scanned_pdf() -> bytes:
    """One page that only paints a grey rectangle: no text to extract, like a scan."""
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        4: stream(b"0.5 g 72 72 400 600 re f"),
    }
    return assemble(objects)


def rewritten(data: bytes, **encrypt) -> bytes:
    """The PDF written again by pypdf, encrypted when given passwords."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    if encrypt:
        writer.encrypt(**encrypt)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def one_page(
    catalog_extra: bytes = b"",
    page_extra: bytes = b"",
    content: bytes | None = None,
    extra_objects: dict[int, bytes] | None = None,
    compress: bool = False,
    content_filter: bytes = b"",
) -> bytes:
    """One page with a line of text; extra entries for the catalogue and the page, extra objects
    from number 10 on. `content_filter` names the filter `content` is already encoded with."""
    line = b"BT /F1 24 Tf 72 720 Td (One page) Tj ET" if content is None else content
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R%s >>" % catalog_extra,
        2: b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        3: FONT,
        4: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 5 0 R "
        b"/Resources << /Font << /F1 3 0 R >> >>%s >>" % page_extra,
        5: stream(line, extra=content_filter, compress=compress),
        **(extra_objects or {}),
    }
    return assemble(objects)
