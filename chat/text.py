"""Text a database can hold: the one place that makes model output and imported text storable.

PostgreSQL refuses NUL (U+0000) in text columns, and jsonb refuses the escape `\\u0000` in any
string or key; a lone surrogate (U+D800–U+DFFF) cannot be encoded as UTF-8 at all, so neither
database driver can send it. The Messages API may hand us either inside model output (its JSON
may escape any code point), and an imported export may hold them too. Such text is made storable
where it enters (each character replaced by U+FFFD, the replacement character) rather than
refused: a reply is never lost to its content. Text a user types is refused instead, with a
clear message (the socket's `send`, renaming a conversation), so nobody's words change silently.
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
# A Python str may hold surrogates singly, and two surrogates in a row are still two code points
# that no UTF-8 encoder accepts: every one of them is unstorable, paired or not.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def has_unstorable(text: str) -> bool:
    """Whether `text` holds a character no database column can store (NUL, a surrogate).

    Without the regular expression, which reads every character in Python's matcher: 310 µs
    for a 21,600-character reply, where this takes 0.2 µs (ASCII) to 30 µs (emoji) — it runs
    on every checkpoint of every streaming reply.
    """
    if "\x00" in text:
        return True
    if text.isascii():  # no surrogate: a flag of the string, read at once
        return False
    try:
        text.encode("utf-8")  # fails on the first surrogate, in C
    except UnicodeEncodeError:
        return True
    return False


def storable(text: str, *, replacement: str = REPLACEMENT) -> str:
    """`text` with every NUL and surrogate replaced by U+FFFD (or `replacement`); any other
    text unchanged.

    Replaces character by character, so storable(a + b) == storable(a) + storable(b): text
    streamed in pieces matches the same text saved whole.
    """
    if not has_unstorable(text):  # the usual case: no copy
        return text
    return _UNSTORABLE.sub(replacement, text)


def storable_json(value: Any) -> Any:
    """A JSON value (content blocks, tool inputs) with every string and key made storable.

    Returns the value itself when nothing had to change, else a changed copy: the caller's
    objects are never modified.
    """
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        items = [storable_json(item) for item in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return items if changed else value
    if isinstance(value, dict):
        pairs = {}
        changed = False
        for key, item in value.items():
            new_key = storable(key) if isinstance(key, str) else key
            new_item = storable_json(item)
            changed = changed or new_key is not key or new_item is not item
            pairs[new_key] = new_item
        return pairs if changed else value
    return value
