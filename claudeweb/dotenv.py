"""Read a `.env` file into the environment: variables already set win.

    KEY=value                 # a comment after an unquoted value
    export KEY="a \\"quoted\\" value with \\n escapes"
    KEY='single quotes keep everything as written'

An empty value (`KEY=`) sets nothing, so a copy of .env.example changes no default. Read once at
startup by claudeweb/settings.py (before any setting), and by the shell scripts
through `python -m claudeweb.dotenv`, which prints `export` lines for the variables the file sets
and the environment does not. `CLAUDEWEB_ENV_FILE` names another file; `-` reads none (the test
suite sets it, so a developer's `.env` does not change what the tests see).

Standard library only: settings import it before Django is configured.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


class EnvFileError(ValueError):
    pass


def env_file_path(base_dir: Path) -> Path | None:
    """The file to read: CLAUDEWEB_ENV_FILE, else base_dir/.env; None when it is `-`."""
    named = os.environ.get("CLAUDEWEB_ENV_FILE", "")
    if named == "-":
        return None
    return Path(named) if named else base_dir / ".env"


def parse(text: str, *, source: str = ".env") -> dict[str, str]:
    """The variables of an env file, in order. Raises EnvFileError naming the bad line."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not KEY.fullmatch(key):
            raise EnvFileError(f"{source}, line {number}: expected KEY=value, got {raw!r}")
        try:
            values[key] = _value(rest.strip())
        except EnvFileError as exc:
            raise EnvFileError(f"{source}, line {number}: {exc}") from None
    return values


def _value(rest: str) -> str:
    if rest[:1] == "'":
        end = rest.find("'", 1)
        if end < 0:
            raise EnvFileError("unterminated single quote")
        _only_comment_after(rest[end + 1 :])
        return rest[1:end]
    if rest[:1] == '"':
        out, i = [], 1
        while i < len(rest):
            ch = rest[i]
            if ch == "\\" and i + 1 < len(rest):
                out.append(ESCAPES.get(rest[i + 1], "\\" + rest[i + 1]))
                i += 2
                continue
            if ch == '"':
                _only_comment_after(rest[i + 1 :])
                return "".join(out)
            out.append(ch)
            i += 1
        raise EnvFileError("unterminated double quote")
    # Unquoted: a ` #` starts a comment; inner spaces stay.
    return re.split(r"\s+#", rest, maxsplit=1)[0].strip()


def _only_comment_after(tail: str) -> None:
    tail = tail.strip()
    if tail and not tail.startswith("#"):
        raise EnvFileError(f"unexpected text after the closing quote: {tail!r}")


def read(path: Path | None) -> dict[str, str]:
    """The file's variables; {} when there is no file."""
    if path is None or not path.is_file():
        return {}
    return parse(path.read_text(encoding="utf-8"), source=str(path))


def missing_from_environment(base_dir: Path) -> dict[str, str]:
    """What the file sets that the environment does not. `KEY=` (empty) in the file sets nothing,
    as in .env.example: a copy of it changes no default."""
    return {
        k: v for k, v in read(env_file_path(base_dir)).items() if v != "" and k not in os.environ
    }


def load(base_dir: Path) -> dict[str, str]:
    """Put the file's variables that the environment lacks into os.environ; returns those."""
    added = missing_from_environment(base_dir)
    os.environ.update(added)
    return added


def main() -> int:
    """Print `export KEY=value` lines (shell-quoted) for what the file adds to the environment."""
    base_dir = Path(__file__).resolve().parent.parent
    try:
        added = missing_from_environment(base_dir)
    except EnvFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key, value in added.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
