"""Policies over HTTP: the page offers only what the user may use, the conversation's settings
refuse what the policy does not allow (403, nothing changed), and uploads keep to the user's
limits (presign and finish, and the limits endpoint says what they are)."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from chat.conversations import lifecycle
from chat.models import Attachment, Conversation, UserSettings
from tests.support.uploads import image_bytes, started, upload

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def page_config(client: Client, url: str = "/") -> dict:
    html = client.get(url).content.decode()
    return json.loads(re.search(r'id="chat-config"[^>]*>(.*?)</script>', html, re.S)[1])


def picker_options(html: str) -> list[str]:
    picker = re.search(r'<select id="model-picker".*?</select>', html, re.S)[0]
    return re.findall(r'<option value="([^"]*)"', picker)


def test_the_page_offers_only_the_allowed_models_efforts_and_switches(
    client, alice, make_policy, settings
):
    settings.CLAUDE_WEB_SEARCH = True
    make_policy(
        "interns",
        alice,
        allowed_models=["claude-haiku-5-5", "claude-opus-5"],
        max_effort="medium",
        web_search=False,
        documents=False,
    )
    html = client.get("/").content.decode()
    assert picker_options(html) == ["claude-haiku-5-5", "claude-opus-5"]
    assert 'data-testid="web-search-toggle"' not in html
    assert "application/pdf" not in re.search(r'id="attach-input"[^>]*>', html, re.S)[0]
    config = page_config(client)
    assert config["model"] == "claude-haiku-5-5"  # the first allowed: the default is not
    assert {m["id"]: m["efforts"] for m in config["models"]} == {
        "claude-haiku-5-5": ["low", "medium"],
        "claude-opus-5": ["low", "medium"],
    }
    assert config["web_search_allowed"] is False and config["documents_allowed"] is False


def test_without_a_policy_the_page_offers_everything(client, settings):
    settings.CLAUDE_WEB_SEARCH = True
    html = client.get("/").content.decode()
    assert len(picker_options(html)) == 11
    assert 'data-testid="web-search-toggle"' in html
    assert "application/pdf" in re.search(r'id="attach-input"[^>]*>', html, re.S)[0]


def test_a_conversation_whose_model_is_no_longer_allowed_says_so(client, alice, make_policy):
    conversation = lifecycle.conversation_create(owner=alice, model="claude-opus-5")
    make_policy("haiku only", alice, allowed_models=["claude-haiku-5-5"])
    html = client.get(f"/c/{conversation.pk}/").content.decode()
    note = re.search(r'data-testid="model-unavailable">(.*?)</p>', html, re.S)[1]
    assert "claude-opus-5, is no longer available to you" in " ".join(note.split())
    assert "Your next message goes to Claude Haiku 5.5" in " ".join(note.split())
    assert page_config(client, f"/c/{conversation.pk}/")["model"] is None


@pytest.mark.parametrize(
    ("policy", "url", "data", "words"),
    [
        ({"max_effort": "low"}, "thinking", {"effort": "high"}, "thinking effort high"),
        ({"web_search": False}, "web-search", {"enabled": "1"}, "Web search"),
    ],
    ids=["effort", "web search"],
)
def test_a_forged_setting_is_refused(
    client, alice, make_policy, settings, policy, url, data, words
):
    settings.CLAUDE_WEB_SEARCH = True
    conversation = lifecycle.conversation_create(owner=alice, model="claude-opus-5")
    make_policy("limited", alice, **policy)
    response = client.post(f"/c/{conversation.pk}/{url}/", data, HTTP_ACCEPT="application/json")
    assert response.status_code == 403 and words in response.json()["error"]
    conversation.refresh_from_db()
    assert (conversation.thinking_effort, conversation.web_search) == ("", False)


@pytest.mark.parametrize(
    ("policy", "data", "words"),
    [
        ({"allowed_models": ["claude-haiku-5-5"]}, {"model": "claude-opus-5"}, "Claude Opus 5"),
        ({"max_effort": "low"}, {"model": "claude-opus-5", "effort": "max"}, "effort max"),
        ({"web_search": False}, {"web_search": "1"}, "Web search"),
    ],
    ids=["model", "effort", "web search"],
)
def test_a_forged_new_conversation_is_refused(
    client, alice, make_policy, settings, policy, data, words
):
    settings.CLAUDE_WEB_SEARCH = True
    make_policy("limited", alice, **policy)
    response = client.post("/c/new/", data, HTTP_ACCEPT="application/json")
    assert response.status_code == 403 and words in response.json()["error"]
    assert not Conversation.objects.filter(owner=alice).exists()


# --- uploads ----------------------------------------------------------------------------------


def test_the_limits_endpoint_returns_the_users_limits(client, alice, make_policy, settings):
    make_policy("small", alice, documents=False, max_files_per_message=3, max_file_bytes=4096)
    limits = client.get("/attachments/limits/").json()
    assert limits["max_per_message"] == 3
    assert limits["max_bytes"] == limits["document_max_bytes"] == 4096
    assert limits["documents_allowed"] is False and limits["document_types"] == []


def test_the_limits_endpoint_without_a_policy_returns_the_servers(client, settings):
    limits = client.get("/attachments/limits/").json()
    assert limits["max_per_message"] == settings.IMAGE_MAX_PER_MESSAGE
    assert limits["max_bytes"] == settings.IMAGE_UPLOAD_MAX_BYTES
    assert limits["documents_allowed"] is True and "application/pdf" in limits["document_types"]


@pytest.mark.parametrize(
    ("policy", "body", "words"),
    [
        ({"documents": False}, {"content_type": "application/pdf", "byte_size": 100}, "Documents"),
        ({"max_file_bytes": 1000}, {"content_type": "image/png", "byte_size": 1001}, "at most"),
    ],
    ids=["document", "size"],
)
def test_a_forged_upload_start_is_refused_and_signs_nothing(
    client, alice, make_policy, policy, body, words
):
    make_policy("limited", alice, **policy)
    response = client.post(
        "/attachments/start/", json.dumps({**body, "name": "f"}), content_type="application/json"
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden" and words in error["message"]
    assert not Attachment.objects.exists()


@pytest.mark.usefixtures("s3")
def test_an_upload_finished_after_the_policy_changed_is_refused(client, alice, make_policy):
    """The policy is asked again at finish: an upload started before a group lost documents
    (or got a smaller limit) is not verified."""
    data = image_bytes()
    attachment, post = started(alice, data)
    upload(post, data)
    make_policy("small", alice, max_file_bytes=10)
    response = client.post(f"/attachments/{attachment.pk}/finish/")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    attachment.refresh_from_db()
    assert attachment.state == Attachment.State.PENDING


def test_the_settings_page_offers_only_the_allowed_models(client, alice, make_policy):
    make_policy("interns", alice, allowed_models=["claude-haiku-5-5"])
    html = client.get("/settings/").content.decode()
    select = re.search(r'<select name="default_model".*?</select>', html, re.S)[0]
    assert re.findall(r'<option value="([^"]*)"', select) == ["", "claude-haiku-5-5"]
    response = client.post(
        "/settings/",
        {"default_model": "claude-opus-5", "time_zone": "UTC", "theme": "system"},
    )
    assert response.status_code == 200  # the form refuses it
    assert not UserSettings.objects.filter(user=alice).exists()
