"""Reads a PDF's structure with pypdf in a child process, under hard limits of time and memory.

chat/uploads/documents.py runs this file as a script
(`python -I pdf_probe.py MAX_PAGES MEMORY_BYTES CPU_SECONDS`) with the PDF on stdin; it answers
one JSON object on stdout: `{"pages": n, "text": bool}` or `{"refused": reason}`, with its
peak memory (`max_rss_bytes`). pypdf is pure
Python and has no timeout: a hostile file (a page tree that loops, a content stream of millions
of operators, a decompression bomb) could hold a thread of the server for as long as it likes,
and a thread cannot be stopped. A process can: the parent kills it after
documents.PDF_CHECK_SECONDS, and the kernel stops it beyond its CPU and address-space limits (set
first, before pypdf is imported). It imports nothing of the app and no Django.
"""

from __future__ import annotations

import io
import json
import sys

# pypdf's decompression ceilings (75 MB per stream by default), lowered for every filter.
STREAM_OUTPUT_LIMIT_BYTES = 16 * 1024 * 1024
# The page tree: nodes visited and nesting. A tree of 600 pages needs a few hundred nodes and a
# depth of a handful; pypdf walks it recursively, so depth is bounded before pypdf sees it.
MAX_TREE_NODES = 10_000
MAX_TREE_DEPTH = 32
# Text layer: text is looked for on this many first pages, each content stream at most this big.
TEXT_PAGES = 3
TEXT_CONTENT_LIMIT_BYTES = 2 * 1024 * 1024

# PDF's own limit on a page's size (ISO 32000, Annex C): 14,400 units, 200 inches.
MAX_PAGE_SIDE = 14_400

DAMAGED = "The PDF could not be read: the file is damaged."
TREE_TOO_LARGE = "The PDF's page tree is too large or too deep to read."
TOO_BIG = "The PDF could not be read: its contents are too large or too deeply nested."


class Refused(Exception):
    """The PDF is refused; str(exc) says why, for the user."""


def limit_resources(*, memory_bytes: int, cpu_seconds: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))


def lower_pypdf_limits() -> None:
    """pypdf's own ceilings (its Configuration, pypdf 7), lowered where ours are smaller."""
    from pypdf import overwrite_configuration

    overwrite_configuration(
        maximum_declared_stream_length=STREAM_OUTPUT_LIMIT_BYTES,
        array_based_stream_maximum_output_length=STREAM_OUTPUT_LIMIT_BYTES,
        jbig2_maximum_output_length=STREAM_OUTPUT_LIMIT_BYTES,
        lzw_maximum_output_length=STREAM_OUTPUT_LIMIT_BYTES,
        run_length_maximum_output_length=STREAM_OUTPUT_LIMIT_BYTES,
        zlib_maximum_output_length=STREAM_OUTPUT_LIMIT_BYTES,
        brotli_maximum_output_length=STREAM_OUTPUT_LIMIT_BYTES,
        image_maximum_buffer_size=STREAM_OUTPUT_LIMIT_BYTES,
        page_tree_maximum_entries=MAX_TREE_NODES,
        page_tree_maximum_depth=MAX_TREE_DEPTH,
        disable_legacy_handling=True,
    )


def count_pages(reader, max_pages: int) -> int:
    """The pages of the page tree, walked without recursion; refuses a loop, a tree too deep
    or too wide, and more than max_pages pages. /Count is the file's claim, checked too."""
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

    root = reader.trailer["/Root"].get_object()
    tree = root.get("/Pages")
    node = tree.get_object() if tree is not None else None
    if not isinstance(node, DictionaryObject):
        raise Refused("The PDF has no pages.")
    declared = node.get("/Count")
    if isinstance(declared, int) and declared > max_pages:
        raise Refused(f"The PDF has {declared:,} pages; at most {max_pages:,} can be attached.")
    seen: set[tuple[int, int]] = set()
    stack = [(tree, 0, None)]
    pages = visited = 0
    while stack:
        ref, depth, box = stack.pop()
        if isinstance(ref, IndirectObject):
            if (ref.idnum, ref.generation) in seen:
                # A loop, or one node listed twice (pypdf would count it again each time: 100,000
                # listings of one page took 12.9 s and 70 MB).
                raise Refused("The PDF's page tree is damaged: it lists a node more than once.")
            seen.add((ref.idnum, ref.generation))
        visited += 1
        if visited > MAX_TREE_NODES or depth > MAX_TREE_DEPTH:
            raise Refused(TREE_TOO_LARGE)
        node = ref.get_object()
        if not isinstance(node, DictionaryObject):
            raise Refused(DAMAGED)
        kids = node.get("/Kids")
        box = node.get("/MediaBox", box)  # inherited from the page's ancestors
        if node.get("/Type") == "/Page" or kids is None:
            check_page_size(box)
            pages += 1
            if pages > max_pages:
                raise Refused(f"The PDF has more than {max_pages:,} pages.")
            continue
        kids = kids.get_object()
        if not isinstance(kids, ArrayObject):
            raise Refused(DAMAGED)
        if len(kids) > MAX_TREE_NODES:
            raise Refused(TREE_TOO_LARGE)
        stack.extend((kid, depth + 1, box) for kid in reversed(kids))
    if declared is not None and declared != pages:
        raise Refused(
            f"The PDF's page tree is damaged: it declares {declared:,} pages and holds {pages:,}."
        )
    return pages


def check_page_size(box) -> None:
    """Refuses a page larger than PDF allows (a renderer asked for its pixels could not stop)."""
    if box is None:
        return  # readers then use US Letter
    try:
        x0, y0, x1, y1 = (float(v) for v in box.get_object())
    except (TypeError, ValueError):
        raise Refused(DAMAGED) from None
    if not (0 < abs(x1 - x0) <= MAX_PAGE_SIDE and 0 < abs(y1 - y0) <= MAX_PAGE_SIDE):
        raise Refused(
            f"A page of the PDF is {abs(x1 - x0):,.0f} × {abs(y1 - y0):,.0f} points; PDF allows "
            f"at most {MAX_PAGE_SIDE:,} on a side."
        )


def has_text(reader, pages: int) -> bool:
    """Whether any of the first pages has text to extract (a scan has none). pypdf's ceilings
    (LimitReachedError: a decompression bomb, a content stream of millions of operators) refuse
    the file; any other failure means that page has no text we can read."""
    from pypdf.errors import LimitReachedError

    for index in range(min(pages, TEXT_PAGES)):
        page = reader.pages[index]
        try:
            contents = page.get_contents()
            if contents is None or len(contents.get_data()) > TEXT_CONTENT_LIMIT_BYTES:
                continue
            if page.extract_text().strip():
                return True
        except (LimitReachedError, MemoryError, RecursionError):
            raise
        except Exception:  # noqa: BLE001, S112 - a page whose text cannot be read has none for us
            continue
    return False


def probe(data: bytes, max_pages: int) -> dict:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise Refused("The PDF is encrypted or password-protected; attach an unprotected copy.")
        pages = count_pages(reader, max_pages)
        if pages == 0:
            raise Refused("The PDF has no pages.")
        text = has_text(reader, pages)
    except Refused:
        raise
    except RecursionError:
        raise Refused("The PDF's structure is nested too deeply to read.") from None
    except (MemoryError, LimitReachedError):  # pypdf's ceilings (decompression, depth)
        raise Refused(TOO_BIG) from None
    except Exception:  # noqa: BLE001 - pypdf raises many types on a damaged file; all mean that
        raise Refused(DAMAGED) from None
    return {"pages": pages, "text": text}


def main() -> None:
    max_pages, memory_bytes, cpu_seconds = (int(arg) for arg in sys.argv[1:4])
    limit_resources(memory_bytes=memory_bytes, cpu_seconds=cpu_seconds)
    lower_pypdf_limits()
    data = sys.stdin.buffer.read()
    try:
        answer = probe(data, max_pages)
    except Refused as exc:
        answer = {"refused": str(exc)}
    answer["max_rss_bytes"] = max_rss_bytes()
    sys.stdout.write(json.dumps(answer))


def max_rss_bytes() -> int | None:
    """This program's peak resident memory, for the log and the tests: VmHWM, which starts
    again at exec (getrusage's ru_maxrss does not: it keeps the parent's size at fork)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    main()
