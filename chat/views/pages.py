"""Pages and form posts. Thin: reads go through chat/conversations (access, tree, search),
multi-row writes through its services.

Every POST is CSRF-protected and answers JSON to `Accept: application/json` (the page's
scripts), else a redirect (plain forms without JavaScript).
"""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from chat import policies
from chat.claude import catalogue
from chat.conversations import access, lifecycle, search, tree
from chat.models import Conversation, UserSettings
from chat.replies import meters
from chat.text import has_unstorable
from chat.views import drawn

TITLE_MAX_CHARS = 200
SEARCH_MAX_CHARS = 200
# The page renders this many messages of the active branch; older ones load on scroll.
MESSAGES_PER_PAGE = 50
MESSAGES_PAGE_MAX = 200


def wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def user_prefs(user) -> UserSettings | None:
    return UserSettings.objects.filter(user=user).first()


def user_zone(prefs: UserSettings | None) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(prefs.time_zone if prefs else "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def _list_context(request: HttpRequest, zone: zoneinfo.ZoneInfo) -> dict:
    """The sidebar's list as `?q=` (a search, with a snippet of each match), `?archived=1` and
    `?page=` ask for it."""
    query = search.search_query(request.GET.get("q", ""))[:SEARCH_MAX_CHARS]
    archived = request.GET.get("archived") == "1"
    if query:
        rows = search.search_conversations(request.user, query, archived=None)
    else:
        rows = access.visible_conversations(request.user, archived=archived)
    paginator = Paginator(rows, settings.CONVERSATIONS_PER_PAGE)
    conversations = paginator.get_page(request.GET.get("page"))
    if query:
        snippets = search.match_snippets([c.pk for c in conversations], query)
        for c in conversations:
            c.snippet = snippets.get(c.pk, [])
    return {
        "conversations": conversations,
        "groups": access.conversation_groups(list(conversations), tz=zone),
        "query": query,
        "archived_view": archived,
    }


def _page(request: HttpRequest, conversation: Conversation | None) -> HttpResponse:
    prefs = user_prefs(request.user)
    zone = user_zone(prefs)
    policy = policies.policy_for(request.user)
    page = tree.path_page(conversation, limit=MESSAGES_PER_PAGE) if conversation else None
    # The pickers offer only what the user's policy allows.
    models = [m for m in catalogue.all_models() if policy.allows_model(m.id)]
    try:
        next_model_id = lifecycle.allowed_default_model(prefs, policy)
    except policies.Forbidden:
        next_model_id = ""
    # The first page writes to the user's (allowed) default model until they pick another.
    current_model = conversation.model if conversation else next_model_id
    model = catalogue.find_model(current_model)
    available = model is not None and policy.allows_model(current_model)
    search_allowed = policy.allows_web_search
    config = {
        "conversation_id": conversation.pk if conversation else None,
        # The first page creates its conversation here when its first message is sent.
        "create_url": None if conversation else reverse("chat:new"),
        "ws_path": f"/ws/conversations/{conversation.pk}/" if conversation else None,
        "messages_url": (
            reverse("chat:messages", args=[conversation.pk]) if conversation else None
        ),
        "max_chars": settings.MESSAGE_MAX_CHARS,
        "meters": meters.conversation_meters(conversation, policy) if conversation else None,
        "models": [_model_config(m, policy) for m in models],
        "thinking_effort": conversation.thinking_effort if conversation else "",
        "thinking_url": reverse("chat:thinking", args=[conversation.pk]) if conversation else None,
        # The toggle shows only where the server and the user's policy allow search; left on
        # from before, it is off.
        "web_search_allowed": search_allowed,
        "web_search": bool(conversation and conversation.web_search and search_allowed),
        "documents_allowed": policy.documents,
        "web_search_url": (
            reverse("chat:web_search", args=[conversation.pk]) if conversation else None
        ),
        # A retired or no longer allowed id is not sent back with the next message: the page
        # sends the model its picker shows, an allowed one.
        "model": current_model if available else None,
        "messages": page.messages if page else [],
        "has_more": page.has_more if page else False,
        "undo_seconds": lifecycle.UNDO_DELETE_SECONDS,
        "time_zone": zone.key,
    }
    undo = _recently_deleted(request)
    with timezone.override(zone):
        return render(
            request,
            "chat/chat.html",
            {
                **_list_context(request, zone),
                "current_id": conversation.pk if conversation else None,
                "conversation": conversation,
                "model": model,
                "current_model": current_model,
                "model_unavailable": bool(conversation) and not available,
                # Listed, but the user's policy does not allow it (else it was retired).
                "model_allowed_elsewhere": model is not None and not available,
                "next_model": catalogue.find_model(next_model_id) if not available else None,
                "models": models,
                "chat_config": config,
                # The messages the page draws itself (None: the script draws them).
                "drawn": drawn.page_messages(page.messages) if page else None,
                "web_search_allowed": search_allowed,
                "documents_allowed": policy.documents,
                "undo_conversation": undo,
                "theme": prefs.theme if prefs else UserSettings.Theme.SYSTEM,
            },
        )


def _model_config(model: catalogue.ModelInfo, policy: policies.Policy) -> dict:
    """What the page's pickers need of a model: its thinking efforts the user's policy allows,
    and whether thinking is always on (then blank means the model's default effort, not off)."""
    return {
        "id": model.id,
        "label": model.label,
        "efforts": policy.allowed_efforts(catalogue.efforts_of(model)),
        "always_thinks": model.thinking == "always",
        "default_effort": model.default_effort,
    }


def _recently_deleted(request: HttpRequest) -> Conversation | None:
    """The conversation named by ?undo=<id> if it is the user's and still restorable."""
    raw = request.GET.get("undo", "")
    if not raw.isdigit():
        return None
    deleted = Conversation.objects.filter(
        pk=int(raw), owner=request.user, deleted_at__isnull=False
    ).first()
    if deleted is None:
        return None
    age = (timezone.now() - deleted.deleted_at).total_seconds()
    return deleted if age <= lifecycle.UNDO_DELETE_SECONDS else None


@require_GET
@login_required
def index(request: HttpRequest) -> HttpResponse:
    return _page(request, None)


@require_GET
@login_required
def conversation_list(request: HttpRequest) -> HttpResponse:
    """The sidebar's list alone (HTML), for searching and paging without leaving the open
    conversation; `?current=<id>` marks the conversation on screen."""
    zone = user_zone(user_prefs(request.user))
    current = request.GET.get("current", "")
    with timezone.override(zone):
        return render(
            request,
            "chat/conversation_list.html",
            {
                **_list_context(request, zone),
                "current_id": int(current) if current.isdigit() else None,
            },
        )


@require_GET
@login_required
def conversation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, access.get_conversation(request.user, pk))


@require_GET
@login_required
def conversation_messages(request: HttpRequest, pk: int) -> JsonResponse:
    """Older messages of the active branch: `?before=<message id>` (and `limit`), as JSON."""
    conversation = access.get_conversation(request.user, pk)
    before, limit = request.GET.get("before", ""), request.GET.get("limit", "")
    if (before and not before.isdigit()) or (limit and not limit.isdigit()):
        return JsonResponse({"error": "before and limit are message ids and counts"}, status=400)
    page = tree.path_page(
        conversation,
        before_id=int(before) if before else None,
        limit=min(int(limit), MESSAGES_PAGE_MAX) if limit else MESSAGES_PER_PAGE,
    )
    return JsonResponse({"messages": page.messages, "has_more": page.has_more})


@require_POST
@login_required
def conversation_new(request: HttpRequest) -> HttpResponse:
    """Create a conversation with the choices made on the first page (`model`, `effort`,
    `web_search`). The page calls it when its first message is sent, so no conversation is
    stored before there is something to put in it; JSON answers carry the new page's URLs."""
    effort = request.POST.get("effort", "")
    web_search = _flag(request, "web_search") if request.POST.get("web_search") else False
    error, status = "", 400
    if effort and effort not in catalogue.EFFORT_LEVELS:
        error = f"effort is blank or one of {', '.join(catalogue.EFFORT_LEVELS)}"
    elif web_search is None:
        error = "web_search is 1 or 0"
    else:
        try:
            conversation = lifecycle.conversation_create(
                owner=request.user,
                model=request.POST.get("model") or None,
                thinking_effort=effort,
                web_search=web_search,
            )
        except catalogue.UnknownModel:
            error = "Unknown model"
        except (lifecycle.EffortNotTaken, lifecycle.WebSearchOff, policies.Forbidden) as exc:
            error, status = exc.message, (403 if exc.code == "forbidden" else 400)
    if error:
        if wants_json(request):
            return JsonResponse({"error": error}, status=status)
        return HttpResponseBadRequest(error, content_type="text/plain; charset=utf-8")
    if wants_json(request):
        return JsonResponse(_conversation_urls(conversation), status=201)
    return redirect("chat:conversation", pk=conversation.pk)


def _conversation_urls(conversation: Conversation) -> dict:
    """What the first page needs to become the new conversation's page."""
    pk = conversation.pk
    return {
        "id": pk,
        "url": reverse("chat:conversation", args=[pk]),
        "ws_path": f"/ws/conversations/{pk}/",
        "messages_url": reverse("chat:messages", args=[pk]),
        "thinking_url": reverse("chat:thinking", args=[pk]),
        "web_search_url": reverse("chat:web_search", args=[pk]),
        "rename_url": reverse("chat:rename", args=[pk]),
        "trash_url": reverse("chat:trash", args=[pk]),
        "export_md_url": reverse("chat:export_md", args=[pk]),
        "export_json_url": reverse("chat:export_json", args=[pk]),
    }


def _done(request: HttpRequest, conversation: Conversation, payload: dict, to: str) -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"id": conversation.pk, **payload})
    return redirect(to)


@require_POST
@login_required
def conversation_rename(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = access.get_conversation(request.user, pk)
    title = " ".join(request.POST.get("title", "").split())[:TITLE_MAX_CHARS]
    if has_unstorable(title):  # what the user typed is refused, not changed (chat/text.py)
        error = "The title holds characters that cannot be stored (NUL or a lone surrogate)."
        if wants_json(request):
            return JsonResponse({"error": error}, status=400)
        return HttpResponseBadRequest(error, content_type="text/plain; charset=utf-8")
    conversation.title = title
    conversation.save(update_fields=["title"])
    to = reverse("chat:conversation", args=[conversation.pk])
    return _done(request, conversation, {"title": conversation.display_title}, to)


@require_POST
@login_required
def conversation_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete for good, without undo; the pages' Delete buttons use `trash`, which has one."""
    conversation = access.get_conversation(request.user, pk)
    lifecycle.conversation_delete(conversation=conversation)
    return redirect("chat:index")


@require_POST
@login_required
def conversation_trash(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = access.get_conversation(request.user, pk)
    lifecycle.conversation_trash(conversation=conversation)
    payload = {
        "deleted": True,
        "undo_url": reverse("chat:restore", args=[conversation.pk]),
        "undo_seconds": lifecycle.UNDO_DELETE_SECONDS,
    }
    return _done(request, conversation, payload, reverse("chat:index") + f"?undo={pk}")


@require_POST
@login_required
def conversation_restore(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = access.get_deleted_conversation(request.user, pk)
    if not lifecycle.conversation_restore(conversation=conversation):
        if wants_json(request):
            return JsonResponse({"error": "Too late to undo: it is deleted."}, status=409)
        flash.error(request, "Too late to undo: the conversation is deleted.")
        return redirect("chat:index")
    url = reverse("chat:conversation", args=[conversation.pk])
    return _done(request, conversation, {"restored": True, "url": url}, url)


@require_POST
@login_required
def conversation_thinking(request: HttpRequest, pk: int) -> HttpResponse:
    """The conversation's thinking effort: `effort` (blank: none asked) for `model` (the
    model the next message goes to; default the conversation's)."""
    conversation = access.get_conversation(request.user, pk)
    effort = request.POST.get("effort", "")
    model = request.POST.get("model") or None
    error, status = "", 400
    if effort and effort not in catalogue.EFFORT_LEVELS:
        error = f"effort is blank or one of {', '.join(catalogue.EFFORT_LEVELS)}"
    else:
        try:
            lifecycle.conversation_set_thinking(
                conversation=conversation,
                effort=effort,
                model=model,
                policy=policies.policy_for(request.user),
            )
        except catalogue.UnknownModel:
            error = "Unknown model"
        except lifecycle.EffortNotTaken as exc:
            error = exc.message
        except policies.Forbidden as exc:
            error, status = exc.message, 403
    if error:
        return JsonResponse({"error": error}, status=status)
    to = reverse("chat:conversation", args=[pk])
    return _done(request, conversation, {"thinking_effort": conversation.thinking_effort}, to)


def _flag(request: HttpRequest, name: str) -> bool | None:
    value = request.POST.get(name, "")
    return {"1": True, "true": True, "0": False, "false": False}.get(value.lower())


@require_POST
@login_required
def conversation_web_search(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner's web search toggle (`enabled`: 1 or 0); 403 where the server or the owner's
    policy allows none."""
    conversation = access.get_conversation(request.user, pk)
    enabled = _flag(request, "enabled")
    if enabled is None:
        return JsonResponse({"error": "enabled is 1 or 0"}, status=400)
    try:
        lifecycle.conversation_set_web_search(
            conversation=conversation, enabled=enabled, policy=policies.policy_for(request.user)
        )
    except (lifecycle.WebSearchOff, policies.Forbidden) as exc:
        return JsonResponse({"error": exc.message}, status=403)
    to = reverse("chat:conversation", args=[pk])
    return _done(request, conversation, {"web_search": conversation.web_search}, to)


@require_POST
@login_required
def conversation_pin(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = access.get_conversation(request.user, pk)
    pinned = _flag(request, "pinned")
    if pinned is None:
        return JsonResponse({"error": "pinned is 1 or 0"}, status=400)
    lifecycle.conversation_set_flags(conversation=conversation, pinned=pinned)
    to = request.POST.get("next") or reverse("chat:conversation", args=[pk])
    return _done(request, conversation, {"pinned": conversation.pinned}, _local(to))


@require_POST
@login_required
def conversation_archive(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = access.get_conversation(request.user, pk)
    archived = _flag(request, "archived")
    if archived is None:
        return JsonResponse({"error": "archived is 1 or 0"}, status=400)
    lifecycle.conversation_set_flags(conversation=conversation, archived=archived)
    to = reverse("chat:conversation", args=[pk])
    payload = {"archived": conversation.archived, "pinned": conversation.pinned}
    return _done(request, conversation, payload, to)


def _local(url: str) -> str:
    """Only a path on this site (no open redirect)."""
    return url if url.startswith("/") and not url.startswith("//") else reverse("chat:index")
