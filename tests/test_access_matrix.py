"""Who gets in, for every URL of the site and the socket: a matrix generated from the resolver.

Every URL pattern of `claudeweb.urls` is walked and must have an entry in EXPECTED (a new route
without one fails `test_every_route_has_an_expectation`). Each route is requested as six people:

- anon: not logged in;
- other: a user who owns nothing here (bob);
- owner: the owner of the objects in the URL (alice);
- staff: staff without any permission (charlie);
- viewer: staff with the view permission of every chat model, nothing else (vera);
- superuser (root).

Expected answers: a status code, LOGIN (302 to the site's login page), ADMIN_LOGIN (302 to the
admin's login page) or REDIRECT (302 anywhere else). Objects in URLs belong to alice; an object
of someone else's must answer exactly like a missing one (404), so existence is not revealed.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from asgiref.sync import sync_to_async
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from chat.conversations import lifecycle
from chat.models import (
    ApiCall,
    Attachment,
    Conversation,
    Feedback,
    GroupPolicy,
    Message,
    SystemPrompt,
    UserBudget,
)
from tests.conftest import make_user, open_socket

pytestmark = pytest.mark.django_db(transaction=True)

ROLES = ("anon", "other", "owner", "staff", "viewer", "superuser")
LOGIN, ADMIN_LOGIN, REDIRECT = "login", "admin-login", "redirect"


# --- walking the resolver -----------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    pattern: str  # the full route, e.g. "c/<int:pk>/rename/"
    name: str  # "namespace:name", or "namespace:" for unnamed patterns


APP_LABELS = re.compile(r"\(\?P<app_label>([^)]*)\)")


def sorted_app_labels(pattern: str) -> str:
    """The admin's app index lists its apps in the order they were registered: sorted here, so
    the expectation does not hang on that order."""
    return APP_LABELS.sub(
        lambda m: "(?P<app_label>" + "|".join(sorted(m.group(1).split("|"))) + ")", pattern
    )


def all_routes() -> list[Route]:
    def walk(resolver, prefix: str, namespace: str | None):
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry, prefix + str(entry.pattern), entry.namespace or namespace)
            elif isinstance(entry, URLPattern):
                name = f"{namespace}:" if namespace else ""
                yield Route(
                    sorted_app_labels(prefix + str(entry.pattern)), name + (entry.name or "")
                )

    return list(walk(get_resolver(), "", None))


# --- expectations -------------------------------------------------------------------------------


def row(method: str, anon, other, owner, staff, viewer, superuser) -> dict:
    return {
        "method": method,
        **dict(zip(ROLES, (anon, other, owner, staff, viewer, superuser), strict=True)),
    }


def admin_row(staff, viewer, superuser, method: str = "get") -> dict:
    """Admin pages: anyone who is not staff is sent to the admin's login page."""
    return row(method, ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, staff, viewer, superuser)


def model_admin(app_model: str, *, viewer_sees: bool, addable: bool, changeable: bool) -> dict:
    """The six routes Django makes for a registered ModelAdmin (the object is alice's)."""
    base = f"admin/{app_model}/"
    seen = 200 if viewer_sees else 403
    obj = "<path:object_id>/"
    return {
        base: admin_row(403, seen, 200),
        base + "add/": admin_row(403, 403, 200 if addable else 403),
        base + obj: admin_row(REDIRECT, REDIRECT, REDIRECT),  # → …/change/
        base + obj + "change/": admin_row(403, seen, 200),
        base + obj + "delete/": admin_row(403, 403, 200 if changeable else 403),
        base + obj + "history/": admin_row(403, seen, 200),
    }


CHAT_MODELS = [
    "conversation",
    "message",
    "apicall",
    "systemprompt",
    "userbudget",
    "attachment",
    "feedback",
]

EXPECTED: dict[str, dict] = {
    # the chat
    "": row("get", LOGIN, 200, 200, 200, 200, 200),
    "c/new/": row("post", LOGIN, REDIRECT, REDIRECT, REDIRECT, REDIRECT, REDIRECT),
    "c/list/": row("get", LOGIN, 200, 200, 200, 200, 200),
    "c/<int:pk>/": row("get", LOGIN, 404, 200, 404, 404, 404),
    "c/<int:pk>/rename/": row("post", LOGIN, 404, REDIRECT, 404, 404, 404),
    "c/<int:pk>/delete/": row("post", LOGIN, 404, REDIRECT, 404, 404, 404),
    "c/<int:pk>/messages/": row("get", LOGIN, 404, 200, 404, 404, 404),
    "c/<int:pk>/trash/": row("post", LOGIN, 404, REDIRECT, 404, 404, 404),
    "c/<int:pk>/restore/": row("post", LOGIN, 404, REDIRECT, 404, 404, 404),
    "c/<int:pk>/pin/": row("post", LOGIN, 404, REDIRECT, 404, 404, 404),
    "c/<int:pk>/archive/": row("post", LOGIN, 404, REDIRECT, 404, 404, 404),
    "c/<int:pk>/thinking/": row("post", LOGIN, 404, REDIRECT, 404, 404, 404),
    "c/<int:pk>/web-search/": row("post", LOGIN, 404, REDIRECT, 404, 404, 404),
    # a reply's rating: the world's message is alice's own question, which takes none (404)
    "c/<int:pk>/messages/<int:message_id>/feedback/": row("post", LOGIN, 404, 404, 404, 404, 404),
    "c/<int:pk>/export.json": row("get", LOGIN, 404, 200, 404, 404, 404),
    "c/<int:pk>/export.md": row("get", LOGIN, 404, 200, 404, 404, 404),
    "c/import/": row("post", LOGIN, REDIRECT, REDIRECT, REDIRECT, REDIRECT, REDIRECT),
    "settings/": row("get", LOGIN, 200, 200, 200, 200, 200),
    # images: JSON endpoints answer 401 rather than redirecting scripts to a login page
    "attachments/limits/": row("get", 401, 200, 200, 200, 200, 200),
    "attachments/start/": row("post", 401, 201, 201, 201, 201, 201),
    "attachments/<int:pk>/finish/": row("post", 401, 404, 400, 404, 404, 404),
    "attachments/<int:pk>/": row("get", LOGIN, 404, REDIRECT, 404, 404, 404),
    # probes: anyone, logged in or not (the services the suite runs are all up)
    "healthz": row("get", 200, 200, 200, 200, 200, 200),
    "readyz": row("get", 200, 200, 200, 200, 200, 200),
    # metrics: off without METRICS_TOKEN or METRICS_ALLOWED_ADDRESSES (tests/test_metrics.py has
    # the token and address rules); a login is no way in
    "metrics": row("get", 404, 404, 404, 404, 404, 404),
    # logging in and out; passwords (a reset link works without a login: its token is the key)
    "login/": row("get", 200, REDIRECT, REDIRECT, REDIRECT, REDIRECT, REDIRECT),
    "password/": row("get", LOGIN, 200, 200, 200, 200, 200),
    "password/reset/": row("get", 200, 200, 200, 200, 200, 200),
    "password/reset/sent/": row("get", 200, 200, 200, 200, 200, 200),
    "password/reset/<uidb64>/<token>/": row("get", 200, 200, 200, 200, 200, 200),
    "password/reset/done/": row("get", 200, 200, 200, 200, 200, 200),
    "logout/": row("post", LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN),
    # single sign-on: absent while OIDC_ISSUER is unset, as here (with it set: tests/sso/)
    "oidc/authenticate/": row("get", 404, 404, 404, 404, 404, 404),
    "oidc/callback/": row("get", 404, 404, 404, 404, 404, 404),
    # the admin site
    "admin/": admin_row(200, 200, 200),
    "admin/login/": row("get", 200, 200, 200, REDIRECT, REDIRECT, REDIRECT),
    # non-staff are sent to the admin index (and from there to its login); staff are logged out
    "admin/logout/": row("post", REDIRECT, REDIRECT, REDIRECT, LOGIN, LOGIN, LOGIN),
    "admin/password_change/": admin_row(200, 200, 200),
    "admin/password_change/done/": admin_row(200, 200, 200),
    "admin/autocomplete/": admin_row(403, 403, 403),
    "admin/jsi18n/": admin_row(200, 200, 200),
    "admin/r/<path:content_type_id>/<path:object_id>/": admin_row(404, 404, 404),
    "admin/^(?P<app_label>auth|axes|chat)/$": admin_row(404, 200, 200),
    "admin/(?P<url>.*)$": admin_row(404, 404, 404),
    "admin/usage/": admin_row(403, 200, 200),
    "admin/chat/apicall/export/": admin_row(403, 200, 200),
    "admin/auth/user/<id>/password/": admin_row(403, 403, 200),
    **model_admin("auth/user", viewer_sees=False, addable=True, changeable=True),
    **model_admin("auth/group", viewer_sees=False, addable=True, changeable=True),
    **model_admin("chat/conversation", viewer_sees=True, addable=True, changeable=True),
    **model_admin("chat/message", viewer_sees=True, addable=True, changeable=True),
    **model_admin("chat/apicall", viewer_sees=True, addable=False, changeable=False),
    **model_admin("chat/systemprompt", viewer_sees=True, addable=True, changeable=True),
    **model_admin("chat/userbudget", viewer_sees=True, addable=True, changeable=True),
    **model_admin("chat/attachment", viewer_sees=True, addable=False, changeable=True),
    **model_admin("chat/feedback", viewer_sees=True, addable=False, changeable=False),
    # login throttling (django-axes): deleting an attempt unlocks its username and address
    **model_admin("axes/accessattempt", viewer_sees=False, addable=False, changeable=True),
    **model_admin("axes/accesslog", viewer_sees=False, addable=False, changeable=True),
    **model_admin("axes/accessfailurelog", viewer_sees=False, addable=False, changeable=True),
}


def test_every_route_has_an_expectation():
    """Adding a URL pattern means deciding who may reach it: add it to EXPECTED."""
    patterns = {route.pattern for route in all_routes()}
    missing = sorted(patterns - EXPECTED.keys())
    stale = sorted(EXPECTED.keys() - patterns)
    assert not missing, f"routes without an access expectation: {missing}"
    assert not stale, f"expectations for routes that no longer exist: {stale}"


# --- the world the matrix runs in ---------------------------------------------------------------


@pytest.fixture
def world(alice, bob, staff, superuser):
    viewer = make_user("vera", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="chat", codename__in=[f"view_{m}" for m in CHAT_MODELS]
        )
    )
    conversation = lifecycle.conversation_create(owner=alice)
    message = Message.objects.create(
        conversation=conversation, role="user", content=[{"type": "text", "text": "hi"}]
    )
    call = ApiCall.objects.create(
        user=alice, conversation=conversation, message=message, model=conversation.model
    )
    attachment = Attachment.objects.create(
        owner=alice,
        key=f"images/{alice.pk}/{uuid.uuid4().hex}.png",
        content_type="image/png",
        byte_size=10,
        width=1,
        height=1,
        state=Attachment.State.VERIFIED,
        verified_at=timezone.now(),
    )
    pending = Attachment.objects.create(
        owner=alice,
        key=f"uploads/{alice.pk}/{uuid.uuid4().hex}.png",
        content_type="image/png",
        byte_size=10,
    )
    budget = UserBudget.objects.create(user=alice, daily_tokens=1000)
    prompt = SystemPrompt.objects.order_by("pk").first() or SystemPrompt.objects.create(
        version=1, text="x"
    )
    group = Group.objects.create(name="readers")
    # The group's page edits its policy too (chat/admin/policies.py): the matrix reaches it.
    GroupPolicy.objects.create(group=group, allowed_models=[conversation.model], web_search=False)
    reply = Message.objects.create(
        conversation=conversation,
        parent=message,
        role="assistant",
        content=[{"type": "text", "text": "hello"}],
    )
    rating = Feedback.objects.create(user=alice, message=reply, rating=Feedback.Rating.UP)
    seen = {"username": "alice", "ip_address": "203.0.113.7", "user_agent": "x", "path_info": "/"}
    attempt = AccessAttempt.objects.create(**seen, failures_since_start=1)
    access = AccessLog.objects.create(**seen)
    failure = AccessFailureLog.objects.create(**seen)
    objects = {
        "auth/user": alice.pk,
        "auth/group": group.pk,
        "chat/conversation": conversation.pk,
        "chat/message": message.pk,
        "chat/apicall": call.pk,
        "chat/systemprompt": prompt.pk,
        "chat/userbudget": budget.pk,
        "chat/attachment": attachment.pk,
        "chat/feedback": rating.pk,
        "axes/accessattempt": attempt.pk,
        "axes/accesslog": access.pk,
        "axes/accessfailurelog": failure.pk,
    }
    users = {
        "anon": None,
        "other": bob,
        "owner": alice,
        "staff": staff,
        "viewer": viewer,
        "superuser": superuser,
    }
    return {
        "users": users,
        "objects": objects,
        "conversation": conversation,
        "attachment": attachment,
        "pending": pending,
        "ct": ContentType.objects.get_for_model(Conversation).pk,
    }


def concrete_url(pattern: str, world: dict) -> str:
    """The route with its parameters filled by alice's objects."""
    if pattern == "attachments/<int:pk>/finish/":
        return f"/attachments/{world['pending'].pk}/finish/"
    if pattern == "attachments/<int:pk>/":
        return f"/attachments/{world['attachment'].pk}/"
    if pattern.startswith("c/<int:pk>/"):
        url = pattern.replace("<int:pk>", str(world["conversation"].pk))
        return "/" + url.replace("<int:message_id>", str(world["objects"]["chat/message"]))
    if pattern == "admin/r/<path:content_type_id>/<path:object_id>/":
        return f"/admin/r/{world['ct']}/{world['conversation'].pk}/"
    if pattern == "admin/^(?P<app_label>auth|axes|chat)/$":
        return "/admin/chat/"
    if pattern == "admin/(?P<url>.*)$":
        return "/admin/no-such-page/"
    if pattern == "password/reset/<uidb64>/<token>/":
        return "/password/reset/MQ/not-a-token/"  # a link that does not work: still a page
    if pattern == "admin/auth/user/<id>/password/":
        return f"/admin/auth/user/{world['objects']['auth/user']}/password/"
    match = re.match(r"admin/(\w+/\w+)/<path:object_id>/(.*)$", pattern)
    if match:
        return f"/admin/{match[1]}/{world['objects'][match[1]]}/{match[2]}"
    assert "<" not in pattern and "(" not in pattern, f"no way to fill {pattern}"
    return "/" + pattern


def request(client: Client, method: str, url: str, pattern: str):
    if pattern == "attachments/start/":
        return client.post(
            url,
            data='{"content_type": "image/png", "byte_size": 10, "name": "a.png"}',
            content_type="application/json",
        )
    if pattern == "c/<int:pk>/rename/":
        return client.post(url, {"title": "renamed"})
    if pattern == "c/<int:pk>/pin/":
        return client.post(url, {"pinned": "0"})
    if pattern == "c/<int:pk>/archive/":
        return client.post(url, {"archived": "0"})
    if pattern == "c/<int:pk>/thinking/":
        return client.post(url, {"effort": ""})
    if pattern == "c/<int:pk>/web-search/":
        return client.post(url, {"enabled": "0"})
    return getattr(client, method)(url)


def outcome(response) -> int | str:
    if response.status_code != 302:
        return response.status_code
    location = response["Location"]
    if location.startswith(reverse("admin:login")):
        return ADMIN_LOGIN
    if location.startswith(reverse("login")):
        return LOGIN
    return REDIRECT


def run_matrix(world: dict, roles: tuple[str, ...], patterns) -> dict:
    actual = {}
    for pattern in patterns:
        expected = EXPECTED[pattern]
        for role in roles:
            client = Client()
            user = world["users"][role]
            if user is not None:
                client.force_login(user)
            url = concrete_url(pattern, world)
            actual[(pattern, role)] = outcome(request(client, expected["method"], url, pattern))
    return actual


# Routes with side effects (deleting the conversation, logging out) run last, one role at a time.
DESTRUCTIVE = {
    "c/<int:pk>/delete/",
    "c/<int:pk>/trash/",
    "c/<int:pk>/restore/",
    "logout/",
    "admin/logout/",
}


@pytest.mark.parametrize("role", ROLES)
def test_the_matrix(world, role):
    patterns = [p for p in EXPECTED if p not in DESTRUCTIVE and p in _live_patterns()]
    actual = run_matrix(world, (role,), patterns)
    wrong = {
        pattern: f"expected {EXPECTED[pattern][role]!r}, got {got!r}"
        for (pattern, _), got in actual.items()
        if got != EXPECTED[pattern][role]
    }
    assert not wrong, f"{role}: {wrong}"
    conversation = world["conversation"]
    conversation.refresh_from_db()
    assert conversation.title in ("", "renamed")
    if role != "owner":
        assert conversation.title == "", f"{role} renamed alice's conversation"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("pattern", sorted(DESTRUCTIVE))
def test_the_matrix_for_destructive_routes(world, role, pattern):
    if pattern == "c/<int:pk>/restore/":  # only a trashed conversation can be restored
        Conversation.objects.filter(pk=world["conversation"].pk).update(deleted_at=timezone.now())
    [got] = run_matrix(world, (role,), [pattern]).values()
    assert got == EXPECTED[pattern][role]
    exists = Conversation.objects.filter(pk=world["conversation"].pk).exists()
    if pattern == "c/<int:pk>/delete/":
        assert exists == (role != "owner")
    if pattern == "c/<int:pk>/restore/":
        trashed = Conversation.objects.get(pk=world["conversation"].pk).deleted_at is not None
        assert trashed == (role != "owner")
    if pattern == "c/<int:pk>/trash/":
        trashed = Conversation.objects.get(pk=world["conversation"].pk).deleted_at is not None
        assert trashed == (role == "owner")


def _live_patterns() -> set[str]:
    return {route.pattern for route in all_routes()}


def test_other_users_objects_answer_like_missing_ones(world):
    """404 for someone else's object and for no object at all: existence is not revealed."""
    bob = world["users"]["other"]
    client = Client()
    client.force_login(bob)
    pk_c, pk_a = world["conversation"].pk, world["attachment"].pk
    for foreign, missing in [
        (f"/c/{pk_c}/", "/c/999999/"),
        (f"/attachments/{pk_a}/", "/attachments/999999/"),
    ]:
        a, b = client.get(foreign), client.get(missing)
        assert a.status_code == b.status_code == 404
    for foreign, missing in [
        (f"/attachments/{world['pending'].pk}/finish/", "/attachments/999999/finish/"),
    ]:
        a, b = client.post(foreign), client.post(missing)
        assert (a.status_code, a.json()) == (b.status_code, b.json())
    a = client.delete(f"/attachments/{pk_a}/")
    b = client.delete("/attachments/999999/")
    assert (
        (a.status_code, a.json())
        == (b.status_code, b.json())
        == (
            404,
            {"error": {"code": "not_found", "message": b.json()["error"]["message"]}},
        )
    )
    assert Attachment.objects.filter(pk=pk_a).exists()


def test_the_attachment_redirect_is_a_presigned_url_for_the_owner_only(world):
    owner = Client()
    owner.force_login(world["users"]["owner"])
    response = owner.get(f"/attachments/{world['attachment'].pk}/")
    assert response.status_code == 302
    location = response["Location"]
    assert "X-Amz-Signature=" in location and world["attachment"].key in location
    assert response["Cache-Control"].startswith("private")
    for role in ("other", "staff", "viewer", "superuser"):
        client = Client()
        client.force_login(world["users"][role])
        assert client.get(f"/attachments/{world['attachment'].pk}/").status_code == 404, role


def test_a_soft_deleted_conversation_is_unreachable(world):
    """Conversation.deleted_at: "never shown or reached" — not by its page nor its forms."""
    conversation = world["conversation"]
    Conversation.objects.filter(pk=conversation.pk).update(deleted_at=timezone.now())
    client = Client()
    client.force_login(world["users"]["owner"])
    assert client.get(f"/c/{conversation.pk}/").status_code == 404
    assert client.post(f"/c/{conversation.pk}/rename/", {"title": "x"}).status_code == 404
    assert str(conversation.pk) not in re.findall(
        r'data-conversation-id="(\d+)"', client.get("/").content.decode()
    )


# --- CSRF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "delete", "put", "patch"])
def test_csrf_is_enforced_on_every_route(world, method):
    """No route is csrf_exempt: an unsafe method without the token is refused before any view,
    for the owner and for a superuser alike, and nothing changes."""
    patterns = sorted(_live_patterns())
    refused = {}
    for role in ("owner", "superuser"):
        client = Client(enforce_csrf_checks=True)
        client.force_login(world["users"][role])
        for pattern in patterns:
            url = concrete_url(pattern, world)
            response = getattr(client, method)(url, data={"title": "csrf"})
            refused[(role, pattern)] = response.status_code
    not_refused = {k: v for k, v in refused.items() if v != 403}
    assert not not_refused, f"{method} without a CSRF token was not refused: {not_refused}"
    conversation = Conversation.objects.get(pk=world["conversation"].pk)
    assert conversation.title == ""
    assert Attachment.objects.filter(pk=world["attachment"].pk).exists()
    assert Conversation.objects.filter(owner=world["users"]["owner"]).count() == 1


def test_csrf_token_from_another_session_is_refused(world):
    """A token lifted from bob's page does not work in alice's session."""
    bob = Client(enforce_csrf_checks=True)
    bob.force_login(world["users"]["other"])
    page = bob.get("/").content.decode()
    token = re.search(r'name="csrf-token" content="([^"]+)"', page)[1]
    alice = Client(enforce_csrf_checks=True)
    alice.force_login(world["users"]["owner"])
    alice.get("/")  # alice has her own CSRF cookie
    url = f"/c/{world['conversation'].pk}/rename/"
    response = alice.post(url, {"title": "forged", "csrfmiddlewaretoken": token})
    # Django's tokens are masked per response but tied to the cookie: another cookie's token fails.
    assert response.status_code == 403
    world["conversation"].refresh_from_db()
    assert world["conversation"].title == ""


def test_cross_origin_post_with_a_valid_token_is_refused(world):
    """Over HTTPS Django also checks Referer/Origin: a foreign Origin is refused."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["users"]["owner"])
    client.get("/")
    token = client.cookies["csrftoken"].value
    response = client.post(
        f"/c/{world['conversation'].pk}/rename/",
        {"title": "forged", "csrfmiddlewaretoken": token},
        HTTP_ORIGIN="https://evil.example",
    )
    assert response.status_code == 403
    world["conversation"].refresh_from_db()
    assert world["conversation"].title == ""


# --- the socket ----------------------------------------------------------------------------------

SOCKET_EXPECTED = {
    "anon": 4401,
    "other": 4404,
    "owner": "open",
    "staff": 4404,
    "viewer": 4404,
    "superuser": 4404,
}


async def socket_outcome(conversation_id: int, user, origin=(b"origin", b"http://localhost")):
    async with open_socket(conversation_id, user, origin=origin, connect=False) as ws:
        connected, code = await ws.connect(timeout=5)
        if not connected:
            return "refused"
        if await ws.receive_nothing(timeout=0.3):
            return "open"
        output = await ws.receive_output(timeout=1)
        return output.get("code") if output["type"] == "websocket.close" else output["type"]


@pytest.mark.usefixtures("finish_replies")
async def test_the_socket_matrix(world):
    conversation_id = world["conversation"].pk
    actual = {}
    for role in ROLES:
        actual[role] = await socket_outcome(conversation_id, world["users"][role])
    assert actual == SOCKET_EXPECTED
    # a missing conversation answers like someone else's
    assert await socket_outcome(999999, world["users"]["owner"]) == 4404


@pytest.mark.parametrize(
    "origin",
    [
        (b"origin", b"http://evil.example"),
        (b"origin", b"http://localhost.evil.example"),
        (b"origin", b"null"),
        (b"origin", b"http://127.0.0.1.evil.example"),
        None,
    ],
    ids=["foreign", "suffix", "null", "ip-suffix", "absent"],
)
@pytest.mark.usefixtures("finish_replies")
async def test_the_socket_refuses_foreign_origins(world, origin):
    got = await socket_outcome(world["conversation"].pk, world["users"]["owner"], origin=origin)
    assert got == "refused"


@pytest.mark.usefixtures("finish_replies")
async def test_the_socket_does_not_reach_a_soft_deleted_conversation(world):
    conversation = world["conversation"]
    await sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(
        deleted_at=timezone.now()
    )
    assert await socket_outcome(conversation.pk, world["users"]["owner"]) == 4404


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/login/?next=https://evil.example/", None),
        ("/login/?next=//evil.example/", None),
        ("/c/{pk}/pin/", {"pinned": "1", "next": "https://evil.example/"}),
        ("/c/{pk}/pin/", {"pinned": "1", "next": "//evil.example/"}),
        ("/c/{pk}/pin/", {"pinned": "1", "next": "/\\evil.example/"}),
        ("/c/{pk}/pin/", {"pinned": "1", "next": "javascript:alert(1)"}),
    ],
    ids=[
        "login-absolute",
        "login-scheme-relative",
        "pin-absolute",
        "pin-scheme-relative",
        "pin-backslash",
        "pin-javascript",
    ],
)
def test_no_open_redirects(world, url, data):
    """`next` parameters only lead back into the site."""
    client = Client()
    url = url.format(pk=world["conversation"].pk)
    if data is None:
        user = world["users"]["owner"]
        response = client.post(url, {"username": user.username, "password": "alice-password-123"})
    else:
        client.force_login(world["users"]["owner"])
        response = client.post(url, data)
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    assert urlsplit(location).netloc == "" and "javascript" not in location.lower()


def test_fixture_sanity(world):
    """The objects the matrix uses are alice's (so 404s for others are about ownership)."""
    alice = world["users"]["owner"]
    assert world["conversation"].owner_id == alice.pk
    assert world["attachment"].owner_id == alice.pk
    assert ApiCall.objects.get(pk=world["objects"]["chat/apicall"]).user_id == alice.pk
    assert Decimal("0") <= ApiCall.objects.get(pk=world["objects"]["chat/apicall"]).cost
