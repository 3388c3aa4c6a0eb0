""".env: read at startup when present, environment variables win (claudeweb/dotenv.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from claudeweb import dotenv

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def settings_in_subprocess(env_file: Path | str, names: list[str], **environ: str) -> list[str]:
    """The named settings as a fresh process sees them (settings are read once per process)."""
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("DJANGO_")}
    env.update(
        environ, CLAUDEWEB_ENV_FILE=str(env_file), DJANGO_SETTINGS_MODULE="claudeweb.settings"
    )
    code = (
        "import django, sys; django.setup(); from django.conf import settings; "
        "[print(repr(getattr(settings, n))) for n in sys.argv[1:]]"
    )
    out = run([sys.executable, "-c", code, *names], env)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_it_parses_what_env_files_hold():
    text = """
# a comment
export DJANGO_DEBUG=false
PLAIN = a value  # a comment after it
SINGLE='keeps # and \\n as written'
DOUBLE="line\\nbreak and \\"quotes\\""
EMPTY=
"""
    assert dotenv.parse(text) == {
        "DJANGO_DEBUG": "false",
        "PLAIN": "a value",
        "SINGLE": "keeps # and \\n as written",
        "DOUBLE": 'line\nbreak and "quotes"',
        "EMPTY": "",
    }


@pytest.mark.parametrize(
    "line", ["no equals sign", "1BAD=x", "A='unterminated", 'A="unterminated', "A='x' trailing"]
)
def test_a_bad_line_is_refused_with_its_number(line):
    with pytest.raises(dotenv.EnvFileError, match=r"\.env, line 2"):
        dotenv.parse(f"OK=1\n{line}\n")


def test_the_file_fills_in_settings_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "DJANGO_ALLOWED_HOSTS=chat.example.com\nCLAUDE_MAX_TOOL_ITERATIONS=3\nDATABASE_URL=\n"
    )
    hosts, iterations = settings_in_subprocess(
        env_file, ["ALLOWED_HOSTS", "CLAUDE_MAX_TOOL_ITERATIONS"], CLAUDE_MAX_TOOL_ITERATIONS="7"
    )
    assert hosts == "['chat.example.com']"
    assert iterations == "7"  # set in the environment: the file does not override it


def test_without_a_file_the_defaults_hold(tmp_path):
    (hosts,) = settings_in_subprocess(tmp_path / "absent.env", ["ALLOWED_HOSTS"])
    assert hosts == "['127.0.0.1', 'localhost', '[::1]']"
    (hosts,) = settings_in_subprocess("-", ["ALLOWED_HOSTS"])
    assert hosts == "['127.0.0.1', 'localhost', '[::1]']"


def test_a_copy_of_the_example_file_starts_the_app(tmp_path):
    env_file = tmp_path / ".env"
    shutil.copy(ROOT / ".env.example", env_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))}
    # As `make run` does when no key is set: the Messages API at a local address.
    env.update(
        CLAUDEWEB_ENV_FILE=str(env_file),
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        ANTHROPIC_BASE_URL="http://127.0.0.1:8765",
    )
    out = run([sys.executable, "manage.py", "check"], env)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_broken_file_stops_startup_with_the_line(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("GOOD=1\nthis is not a variable\n")
    env = dict(os.environ, CLAUDEWEB_ENV_FILE=str(env_file))
    out = run([sys.executable, "manage.py", "check"], env)
    assert out.returncode != 0
    assert "line 2" in out.stderr


def test_the_scripts_get_export_lines_for_what_the_environment_lacks(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("ANTHROPIC_API_KEY=sk-from-file\nS3_PORT='9 100'\nPORT=8001\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "S3_PORT")}
    env.update(CLAUDEWEB_ENV_FILE=str(env_file), PORT="8002")
    script = 'eval "$(python -m claudeweb.dotenv)"; echo "$ANTHROPIC_API_KEY|$S3_PORT|$PORT"'
    out = run(["bash", "-c", script.replace("python", sys.executable)], env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sk-from-file|9 100|8002"
