"""Ratings of replies: thumbs up or down with a comment, by the conversation's owner only;
shown to admins beside the conversation and counted on the usage dashboard."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from chat.conversations import lifecycle, tree
from chat.models import Feedback, Message

pytestmark = pytest.mark.django_db
JSON = {"HTTP_ACCEPT": "application/json"}
HOSTILE = '<script>alert("x")</script> & <b>bold</b>'


def exchange(conversation) -> tuple[Message, Message]:
    question = Message.objects.create(
        conversation=conversation, role="user", content=[{"type": "text", "text": "hi"}]
    )
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        parent=question,
        content=[{"type": "text", "text": "hello"}],
    )
    conversation.leaf = reply
    conversation.save(update_fields=["leaf"])
    return question, reply


def url(message: Message, conversation_id: int | None = None) -> str:
    return reverse(
        "chat:message_feedback", args=[conversation_id or message.conversation_id, message.pk]
    )


@pytest.fixture
def reply(conversation):
    return exchange(conversation)[1]


def test_it_works(client, alice, reply):
    client.force_login(alice)
    response = client.post(url(reply), {"rating": "up", "comment": "  spot on  "}, **JSON)
    assert response.status_code == 200
    assert response.json() == {
        "message_id": reply.pk,
        "feedback": {"rating": "up", "comment": "spot on"},
    }
    saved = Feedback.objects.get()
    assert (saved.user, saved.message, saved.rating) == (alice, reply, "up")


def test_rating_again_changes_the_one_rating_and_an_empty_one_takes_it_back(client, alice, reply):
    client.force_login(alice)
    client.post(url(reply), {"rating": "up"})
    response = client.post(url(reply), {"rating": "down", "comment": "wrong year"})
    assert response.json()["feedback"] == {"rating": "down", "comment": "wrong year"}
    assert list(Feedback.objects.values_list("rating", "comment")) == [("down", "wrong year")]
    response = client.post(url(reply), {"rating": ""})
    assert response.status_code == 200 and response.json()["feedback"] is None
    assert not Feedback.objects.exists()


def test_it_checks_ownership(client, alice, bob, reply):
    """Someone else's reply, a user's message, a reply of another conversation and a reply
    still being written are all the same 404; nothing is stored."""
    question = reply.parent
    client.force_login(bob)
    assert client.post(url(reply), {"rating": "up"}).status_code == 404
    client.force_login(alice)
    assert client.post(url(question), {"rating": "up"}).status_code == 404
    other = lifecycle.conversation_create(owner=alice)
    assert client.post(url(reply, other.pk), {"rating": "up"}).status_code == 404
    bobs = exchange(lifecycle.conversation_create(owner=bob))[1]
    assert client.post(url(bobs, reply.conversation_id), {"rating": "up"}).status_code == 404
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.STREAMING)
    assert client.post(url(reply), {"rating": "up"}).status_code == 404
    assert not Feedback.objects.exists()


def test_it_needs_login_a_post_and_the_csrf_token(alice, reply):
    anonymous = Client()
    response = anonymous.post(url(reply), {"rating": "up"})
    assert response.status_code == 302 and "/login/" in response["Location"]
    guarded = Client(enforce_csrf_checks=True)
    guarded.force_login(alice)
    assert guarded.post(url(reply), {"rating": "up"}).status_code == 403
    assert guarded.get(url(reply)).status_code == 405
    assert not Feedback.objects.exists()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"rating": "meh"}, "The rating is up or down."),
        ({"rating": "up", "comment": "x" * 2001}, "the limit is 2,000"),
        ({"rating": "down", "comment": "a\x00b"}, "cannot be stored"),
    ],
)
def test_a_bad_rating_or_comment_is_refused_and_nothing_is_stored(
    client, alice, reply, fields, error
):
    client.force_login(alice)
    response = client.post(url(reply), fields, **JSON)
    assert response.status_code == 400 and error in response.json()["error"]
    assert not Feedback.objects.exists()


def test_the_page_gives_each_reply_its_owners_rating(client, alice, conversation, reply):
    client.force_login(alice)
    client.post(url(reply), {"rating": "down", "comment": HOSTILE})
    page = tree.path_page(conversation)
    question, answer = page.messages
    assert "feedback" not in question
    assert answer["feedback"] == {"rating": "down", "comment": HOSTILE}  # stored as given
    listed = client.get(reverse("chat:messages", args=[conversation.pk])).json()["messages"]
    assert listed[1]["feedback"]["rating"] == "down"


def test_admins_see_ratings_beside_the_conversation_as_text(
    client, alice, superuser, conversation, reply
):
    Feedback.objects.create(message=reply, user=alice, rating="down", comment=HOSTILE)
    client.force_login(superuser)
    page = client.get(reverse("admin:chat_conversation_change", args=[conversation.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "0 up, 1 down" in html
    assert "&lt;script&gt;" in html and HOSTILE not in html  # the comment, escaped
    listed = client.get(
        reverse("admin:chat_feedback_changelist"),
        {"message__conversation__id__exact": conversation.pk},
    )
    assert listed.status_code == 200 and listed.context["cl"].result_count == 1
    assert "&lt;script&gt;" in listed.content.decode()


def test_the_dashboard_counts_ratings_given_in_its_period(admin_client, alice, conversation):
    replies = [exchange(conversation)[1] for _ in range(4)]
    for message, rating in zip(replies, ["up", "up", "down", "down"], strict=True):
        Feedback.objects.create(message=message, user=alice, rating=rating)
    # One rating from before the period: not counted.
    Feedback.objects.filter(message=replies[3]).update(
        updated_at=timezone.now() - timedelta(days=40)
    )
    response = admin_client.get(reverse("admin:usage_dashboard"), {"period": "30d"})
    assert response.context["feedback"] == {"up": 2, "down": 1}
    html = response.content.decode()
    assert 'data-feedback="up">2<' in html and 'data-feedback="down">1<' in html
