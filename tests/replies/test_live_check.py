"""`manage.py claude_live_check`, run against the offline model (never Anthropic's API): one
request per capability through the app's own client, a table, exit code 1 on any failure."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError

from chat.claude import catalogue, request_body
from chat.replies import live_check

ROOT = Path(__file__).resolve().parents[2]
HAIKU_55 = "claude-haiku-5-5"
UNSERVED = "claude-haiku-9-9"


def run_check(*args: str) -> tuple[str, CommandError | None]:
    out = io.StringIO()
    try:
        call_command("claude_live_check", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def table(output: str) -> dict[str, list[str]]:
    """The table's rows by capability: each row's cells (split on runs of two spaces)."""
    rows = {}
    for line in output.splitlines():
        name = next((c for c in live_check.CAPABILITIES if line.startswith(c + "  ")), None)
        if name:
            rows[name] = [cell.strip() for cell in line.split("  ") if cell.strip()]
    return rows


def offline_records(base_url: str) -> list[dict]:
    with urllib.request.urlopen(base_url + "/_offline/requests", timeout=5) as response:
        return json.load(response)


def catalogue_with(tmp_path: Path, *, changed: dict[str, dict], added: list[dict]) -> Path:
    """The app's catalogue with some rows changed and some added, as a file of its own."""
    data = json.loads(Path(django_settings.CLAUDE_MODEL_CATALOGUE).read_text())
    for row in data["models"]:
        row.update(changed.get(row["id"], {}))
    data["models"] += added
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data))
    return path


def unserved_row() -> dict:
    data = json.loads(Path(django_settings.CLAUDE_MODEL_CATALOGUE).read_text())
    row = next(r for r in data["models"] if r["id"] == HAIKU_55)
    return {**row, "id": UNSERVED, "label": "A model the API does not serve"}


def test_every_capability_passes_against_the_offline_model(offline_claude_url, offline_requests):
    output, error = run_check()

    assert error is None, output
    rows = table(output)
    assert list(rows) == list(live_check.CAPABILITIES)
    for name, cells in rows.items():
        assert cells[1:3] == ["ok", HAIKU_55], (name, cells)
    assert output.splitlines()[-1] == "All 5 capabilities ok."
    # Said plainly: these figures are not Claude's.
    assert f"ANTHROPIC_BASE_URL is {offline_claude_url}, not Anthropic's API" in output
    assert "Anthropic's API (" not in output


def test_the_requests_are_the_apps_tool_loop_and_continue(offline_claude_url, offline_requests):
    _, error = run_check()
    assert error is None

    sent = [r["body"] for r in offline_requests.all()]
    assert [b["model"] for b in sent] == [HAIKU_55] * 5
    reply, tool_1, tool_2, cut, more = sent
    # The tool loop: adaptive thinking at low effort, summarized; the calculator only.
    for body in (tool_1, tool_2):
        assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
        assert body["output_config"] == {"effort": "low"}
        assert [t["name"] for t in body["tools"]] == ["calculator"]
    assistant, results = tool_2["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["content"][0]["type"] == "thinking"
    assert assistant["content"][0]["thinking"] and assistant["content"][0]["signature"]
    assert results["content"][0]["type"] == "tool_result"
    assert results["content"][0]["content"] == "7006652"  # 1234 * 5678, by the calculator
    # Continue: the cut reply as a complete assistant turn, then the request to go on.
    assert cut["max_tokens"] == live_check.CUT_MAX_TOKENS
    assert [m["role"] for m in more["messages"]] == ["user", "assistant", "user"]
    assert more["messages"][-1]["content"][-1]["text"] == request_body.CONTINUE_PROMPT
    assert "thinking" not in reply and "thinking" not in cut  # as the app asks by default
    paths = [r["path"] for r in offline_records(offline_claude_url)]
    assert paths.count("/v1/messages/count_tokens") == 1
    assert paths.count("/v1/models") == 1


def test_each_row_prices_its_tokens_from_the_catalogue(offline_requests):
    output, _ = run_check()

    cells = table(output)["streamed reply"]
    input_tokens, output_tokens = int(cells[3].replace(",", "")), int(cells[4].replace(",", ""))
    haiku = catalogue.get_model(HAIKU_55)
    expected = (input_tokens * haiku.price_input + output_tokens * haiku.price_output) / 10**6
    assert input_tokens > 0 and output_tokens > 0
    assert cells[5] == f"${expected:.6f}"
    counted = table(output)["count_tokens"]
    assert int(counted[3].replace(",", "")) > 0 and counted[5] == "$0.000000"


def test_a_model_the_api_does_not_serve_fails_every_capability_with_exit_code_1(
    offline_claude_url, tmp_path, offline_requests
):
    path = catalogue_with(tmp_path, changed={}, added=[unserved_row()])
    env = dict(
        os.environ,
        ANTHROPIC_BASE_URL=offline_claude_url,
        ANTHROPIC_API_KEY="test-key",
        CLAUDE_MAX_RETRIES="0",
        CLAUDE_MODEL_CATALOGUE=str(path),
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "claude_live_check", "--model", UNSERVED],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    rows = table(done.stdout)
    assert list(rows) == list(live_check.CAPABILITIES)
    for name in ("streamed reply", "tool loop + thinking", "continue", "count_tokens"):
        assert rows[name][1] == "FAILED", rows[name]
        assert (
            "upstream_invalid (HTTP 404): A model the API does not serve rejected" in rows[name][-1]
        )
        assert UNSERVED in rows[name][-1]
    assert rows["models"][1] == "FAILED"
    assert f"{UNSERVED} is not among the" in rows["models"][-1]
    assert "5 of 5 capabilities FAILED" in done.stderr


def test_a_capability_the_catalogue_misstates_fails_alone(settings, tmp_path, offline_requests):
    # Haiku 4.5 takes manual thinking only; a catalogue that says adaptive is caught.
    adaptive = {"thinking": "adaptive", "effort_levels": ["low", "medium", "high"]}
    settings.CLAUDE_MODEL_CATALOGUE = catalogue_with(
        tmp_path, changed={"claude-haiku-4-5": adaptive}, added=[]
    )

    output, error = run_check("--model", "claude-haiku-4-5")

    assert error is not None and error.returncode == 1
    assert str(error) == "1 of 5 capabilities FAILED: tool loop + thinking."
    rows = table(output)
    assert rows["tool loop + thinking"][1] == "FAILED"
    assert rows["tool loop + thinking"][-1].startswith("upstream_invalid (HTTP 400): ")
    assert "thinking.type.adaptive" in rows["tool loop + thinking"][-1]
    assert [rows[n][1] for n in rows if n != "tool loop + thinking"] == ["ok"] * 4


def test_it_refuses_to_run_without_a_key(settings, offline_claude_url, offline_requests):
    settings.ANTHROPIC_API_KEY = ""

    with pytest.raises(CommandError, match="ANTHROPIC_API_KEY is not set"):
        call_command("claude_live_check", stdout=io.StringIO())
    assert offline_records(offline_claude_url) == []


def test_it_refuses_a_model_the_catalogue_does_not_list(offline_requests):
    with pytest.raises(CommandError, match="not in the catalogue"):
        call_command("claude_live_check", "--model", UNSERVED, stdout=io.StringIO())


def test_it_says_whether_requests_go_to_anthropic():
    assert live_check.describe_target("") == (
        True,
        "Requests go to Anthropic's API (https://api.anthropic.com).",
    )
    assert live_check.describe_target("https://api.anthropic.com/")[0] is True
    for elsewhere in (
        "http://127.0.0.1:8765",
        "http://api.anthropic.com",
        "https://api.anthropic.com.example.net",
        "https://gateway.example.com/anthropic",
    ):
        reaches, sentence = live_check.describe_target(elsewhere)
        assert reaches is False and "not Anthropic's API" in sentence, elsewhere


def test_the_default_is_the_cheapest_current_model_that_thinks_adaptively():
    assert live_check.default_model().id == HAIKU_55


def test_the_whole_check_costs_well_under_a_cent_on_haiku_5_5(offline_requests):
    worst = live_check.worst_case_cost(catalogue.get_model(HAIKU_55))

    assert Decimal("0") < worst < Decimal("0.005")
    output, _ = run_check()
    assert f"at most ${worst:.4f}" in output
