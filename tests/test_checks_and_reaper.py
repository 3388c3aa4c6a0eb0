"""Configuration checks and startup reconciliation."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command

from chat.checks import check_claude_settings
from chat.conversations import lifecycle
from chat.models import Message
from chat.replies import checkpoints


def codes(settings) -> set[str]:
    return {error.id for error in check_claude_settings()}


def test_good_settings_pass(settings):
    assert codes(settings) == set()


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        ("CLAUDE_MAX_TOOL_ITERATIONS", 0, "claudeweb.E002"),
        ("CLAUDE_MAX_TOOL_ITERATIONS", 11, "claudeweb.E002"),
        ("CONVERSATION_TOKEN_BUDGET", 999, "claudeweb.E003"),
        ("USER_DAILY_COST_BUDGET", "-1", "claudeweb.E018"),
        ("USER_MONTHLY_COST_BUDGET", "five dollars", "claudeweb.E018"),
        ("USER_DAILY_TOKEN_BUDGET", -5, "claudeweb.E018"),
        ("CLAUDE_MODEL_CATALOGUE", "/nonexistent/models.json", "claudeweb.E004"),
        ("CLAUDE_DEFAULT_MODEL", "claude-nonexistent", "claudeweb.E005"),
        ("CLAUDE_MAX_OUTPUT_TOKENS", 0, "claudeweb.E006"),
    ],
)
def test_bad_values_are_reported(settings, name, value, code):
    setattr(settings, name, value)
    assert code in codes(settings)


def test_no_conversation_cap_and_no_user_limit_are_good_settings(settings):
    settings.CONVERSATION_TOKEN_BUDGET = 0
    settings.USER_DAILY_COST_BUDGET = "0"
    settings.USER_MONTHLY_COST_BUDGET = "2.50"
    assert codes(settings) == set()


def test_a_missing_key_without_a_base_url_is_reported(settings):
    settings.ANTHROPIC_API_KEY = ""
    settings.ANTHROPIC_BASE_URL = ""
    assert "claudeweb.E001" in codes(settings)
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:8765"
    assert "claudeweb.E001" not in codes(settings)


@pytest.mark.django_db
def test_startup_marks_orphaned_replies_interrupted_with_their_checkpoint(alice):
    conversation = lifecycle.conversation_create(owner=alice)
    reply = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content=[]
    )
    checkpoints.checkpoint_many(
        [checkpoints.Checkpoint(reply.pk, [{"type": "text", "text": "partial answer"}], 3)]
    )
    call_command("reap_replies", "--stale-seconds", "0")
    reply.refresh_from_db()
    assert reply.status == Message.Status.INTERRUPTED
    assert reply.text == "partial answer"


@pytest.mark.django_db
def test_a_live_reply_is_not_reaped(alice):
    conversation = lifecycle.conversation_create(owner=alice)
    reply = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content=[]
    )
    checkpoints.checkpoint_many(
        [checkpoints.Checkpoint(reply.pk, [{"type": "text", "text": "still going"}], 1)]
    )
    assert checkpoints.reap_stale_replies(stale_seconds=30) == 0
    reply.refresh_from_db()
    assert reply.status == Message.Status.STREAMING


@pytest.mark.django_db
def test_one_streaming_reply_per_conversation_is_enforced(alice):
    from django.db import IntegrityError, transaction

    conversation = lifecycle.conversation_create(owner=alice)
    Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, role="assistant", status="streaming")


def test_a_bad_image_delivery_is_reported(settings):
    settings.IMAGE_DELIVERY = "carrier-pigeon"
    assert "claudeweb.E009" in codes(settings)


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        ("IMAGE_VERIFY_CONCURRENCY", 0, "claudeweb.E010"),
        ("IMAGE_VERIFY_WAIT_SECONDS", -1.0, "claudeweb.E011"),
        ("IMAGE_VERIFY_WAIT_SECONDS", 600.0, "claudeweb.E011"),
    ],
)
def test_bad_image_check_limits_are_reported(settings, name, value, code):
    assert code not in codes(settings)
    setattr(settings, name, value)
    assert code in codes(settings)


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        ("DOCUMENT_MAX_BYTES", 0, "claudeweb.E013"),
        ("DOCUMENT_MAX_BYTES", 32 * 1024 * 1024 + 1, "claudeweb.E013"),
        ("TEXT_DOCUMENT_MAX_BYTES", 0, "claudeweb.E013"),
        ("DOCUMENT_MAX_PAGES", 601, "claudeweb.E014"),
        ("DOCUMENT_MAX_PAGES", 50, "claudeweb.E014"),  # below the small-window limit (100)
        ("DOCUMENT_MAX_PAGES_SMALL_WINDOW", 0, "claudeweb.E014"),
        ("CLAUDE_REQUEST_MAX_BYTES", 1024, "claudeweb.E019"),
    ],
)
def test_bad_document_limits_are_reported(settings, name, value, code):
    assert code not in codes(settings)
    setattr(settings, name, value)
    assert code in codes(settings)


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        ("CLAUDE_WEB_SEARCH_TOOL", "web_search", "claudeweb.E015"),
        ("CLAUDE_WEB_SEARCH_MAX_USES", 0, "claudeweb.E016"),
        ("CLAUDE_WEB_SEARCH_BLOCKED_DOMAINS", ["example.net"], "claudeweb.E017"),
    ],
)
def test_a_web_search_tool_the_api_refuses_is_reported(settings, name, value, code):
    settings.CLAUDE_WEB_SEARCH_ALLOWED_DOMAINS = ["example.org"]  # alone: fine
    assert code not in codes(settings)
    setattr(settings, name, value)
    assert code in codes(settings)


def test_every_bad_setting_has_a_code_of_its_own(settings):
    # An admin looks a problem up by its code: two problems must never share one.
    settings.CLAUDE_MAX_TOOL_ITERATIONS = 0
    settings.CONVERSATION_TOKEN_BUDGET = 1
    settings.CLAUDE_MAX_OUTPUT_TOKENS = 0
    settings.CLAUDE_COMPACTION_TRIGGER_TOKENS = 1
    settings.MESSAGE_MAX_CHARS = 0
    settings.STREAM_COALESCE_MS = -1
    settings.IMAGE_DELIVERY = "carrier-pigeon"
    settings.IMAGE_VERIFY_CONCURRENCY = 0
    settings.IMAGE_VERIFY_WAIT_SECONDS = -1.0
    settings.CLAUDE_WEB_SEARCH_TOOL = "web_search_19990101"
    settings.CLAUDE_WEB_SEARCH_MAX_USES = 0
    settings.CLAUDE_WEB_SEARCH_ALLOWED_DOMAINS = ["example.org"]
    settings.CLAUDE_WEB_SEARCH_BLOCKED_DOMAINS = ["example.net"]
    settings.DOCUMENT_MAX_BYTES = 0
    settings.DOCUMENT_MAX_PAGES = 0
    settings.USER_DAILY_COST_BUDGET = "-1"
    found = [c for c in codes(settings) if c.startswith("claudeweb.E")]
    assert len(found) == 15 and len(set(found)) == len(found), found


def test_production_settings_pass_check_deploy_with_no_warnings():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ,
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="x" * 20 + "-a-long-random-production-secret-key-0123456789",
        DJANGO_ALLOWED_HOSTS="chat.example.com",
        ANTHROPIC_API_KEY="sk-placeholder",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
def test_pages_send_the_security_headers(client, alice):
    client.force_login(alice)
    response = client.get("/")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    assert "frame-ancestors 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db(transaction=True)  # the loop closes connections between its turns
def test_the_maintenance_loop_runs_the_reaper_and_the_cleanup(alice):
    conversation = lifecycle.conversation_create(owner=alice)
    reply = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content=[]
    )
    # Its process stopped checkpointing ten minutes ago.
    Message.objects.filter(pk=reply.pk).update(updated_at=reply.updated_at - timedelta(seconds=600))
    out = io.StringIO()
    call_command("run_maintenance", "--once", stdout=out)
    reply.refresh_from_db()
    assert reply.status == Message.Status.INTERRUPTED
    assert "Marked 1 reply(ies) interrupted." in out.getvalue()
    assert "unsent attachment(s) older than 24 h." in out.getvalue()
