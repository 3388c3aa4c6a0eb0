"""Pages and form posts. Thin: reads go through selectors, multi-row writes through services."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from chat import catalogue, selectors, services
from chat.models import Conversation

TITLE_MAX_CHARS = 200


def _path_dicts(conversation: Conversation) -> list[dict]:
    path = selectors.active_path(conversation)
    return [selectors.message_to_dict(m, path.versions[m.pk]) for m in path.messages]


def _page(request: HttpRequest, conversation: Conversation | None) -> HttpResponse:
    paginator = Paginator(selectors.conversations_of(request.user), settings.CONVERSATIONS_PER_PAGE)
    conversations = paginator.get_page(request.GET.get("page"))
    config = {
        "conversation_id": conversation.pk if conversation else None,
        "ws_path": f"/ws/conversations/{conversation.pk}/" if conversation else None,
        "max_chars": settings.MESSAGE_MAX_CHARS,
        "meters": services.conversation_meters(conversation) if conversation else None,
        "models": [{"id": m.id, "label": m.label} for m in catalogue.all_models()],
        "model": conversation.model if conversation else None,
        "messages": _path_dicts(conversation) if conversation else [],
    }
    model = catalogue.get_model(conversation.model) if conversation else None
    return render(
        request,
        "chat/chat.html",
        {
            "conversations": conversations,
            "conversation": conversation,
            "model": model,
            "chat_config": config,
        },
    )


@require_GET
@login_required
def index(request: HttpRequest) -> HttpResponse:
    return _page(request, None)


@require_GET
@login_required
def conversation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _page(request, selectors.get_conversation(request.user, pk))


@require_POST
@login_required
def conversation_new(request: HttpRequest) -> HttpResponse:
    conversation = services.conversation_create(owner=request.user)
    return redirect("chat:conversation", pk=conversation.pk)


@require_POST
@login_required
def conversation_rename(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = selectors.get_conversation(request.user, pk)
    title = " ".join(request.POST.get("title", "").split())[:TITLE_MAX_CHARS]
    conversation.title = title
    conversation.save(update_fields=["title"])
    return redirect("chat:conversation", pk=conversation.pk)


@require_POST
@login_required
def conversation_delete(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = selectors.get_conversation(request.user, pk)
    services.conversation_delete(conversation=conversation)
    return redirect("chat:index")
