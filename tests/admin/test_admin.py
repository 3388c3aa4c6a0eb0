"""Admins see every conversation and every API call; the ledger cannot be edited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from chat.claude.records import CallRecord, Usage
from chat.conversations import lifecycle
from chat.ledger import entries
from chat.models import ApiCall, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger(alice, bob):
    rows = []
    for user in (alice, bob):
        conversation = lifecycle.conversation_create(owner=user)
        reply = Message.objects.create(conversation=conversation, role="assistant", content=[])
        entries.record_calls(
            calls=[
                CallRecord(
                    model="claude-haiku-4-5",
                    request_id=f"req_{user.username}",
                    usage=Usage(input_tokens=10, output_tokens=5),
                )
            ],
            user_id=user.pk,
            conversation_id=conversation.pk,
            message_id=reply.pk,
        )
        rows.append(conversation)
    return rows


@pytest.mark.parametrize(
    "name", ["chat_conversation", "chat_message", "chat_apicall", "chat_systemprompt"]
)
def test_superusers_see_every_row(client, superuser, ledger, name):
    client.force_login(superuser)
    response = client.get(reverse(f"admin:{name}_changelist"))
    assert response.status_code == 200
    if name != "chat_systemprompt":
        assert response.context["cl"].result_count >= 2


def test_conversation_page_shows_its_messages(client, superuser, ledger):
    client.force_login(superuser)
    response = client.get(reverse("admin:chat_conversation_change", args=[ledger[0].pk]))
    assert response.status_code == 200
    assert "assistant" in response.content.decode()


def test_the_ledger_is_read_only(client, superuser, ledger):
    client.force_login(superuser)
    call = ApiCall.objects.first()
    assert client.get(reverse("admin:chat_apicall_add")).status_code == 403
    client.post(reverse("admin:chat_apicall_change", args=[call.pk]), {"input_tokens": 0})
    client.post(reverse("admin:chat_apicall_delete", args=[call.pk]), {"post": "yes"})
    call.refresh_from_db()
    assert call.input_tokens == 10


def test_the_calls_list_shows_web_searches_beside_the_tokens(client, superuser, alice):
    call = CallRecord(
        model="claude-sonnet-5-5",
        usage=Usage(input_tokens=10, output_tokens=5, web_search_requests=2),
    )
    entries.record_calls(calls=[call], user_id=alice.pk, conversation_id=None, message_id=None)
    client.force_login(superuser)
    response = client.get(reverse("admin:chat_apicall_changelist"))
    html = response.content.decode()
    assert "column-web_search_requests" in html
    assert '<td class="field-web_search_requests">2</td>' in html


def test_non_staff_never_reach_admin(client, alice, ledger):
    client.force_login(alice)
    response = client.get(reverse("admin:chat_apicall_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize("name", ["chat_apicall", "chat_conversation", "chat_message"])
def test_changelists_run_a_constant_number_of_queries(client, superuser, alice, name):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(superuser)

    def queries_with(conversations: int) -> int:
        for _ in range(conversations):
            conversation = lifecycle.conversation_create(owner=alice)
            reply = Message.objects.create(conversation=conversation, role="assistant")
            entries.record_calls(
                calls=[CallRecord(model="claude-haiku-4-5", usage=Usage(input_tokens=1))],
                user_id=alice.pk,
                conversation_id=conversation.pk,
                message_id=reply.pk,
            )
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse(f"admin:{name}_changelist")).status_code == 200
        return len(ctx.captured_queries)

    assert queries_with(2) == queries_with(30)


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/login/",
        "/admin/chat/conversation/",
        "/admin/chat/conversation/add/",
    ],
)
def test_admin_pages_name_the_site_icon(client, superuser, url):
    """Without an icon link the browser asks for /favicon.ico, which is a 404."""
    if url != "/admin/login/":
        client.force_login(superuser)
    html = client.get(url).content.decode()
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in html
