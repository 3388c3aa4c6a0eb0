"""Download a conversation as JSON or Markdown; upload such JSON as a new conversation."""

from __future__ import annotations

import re

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from chat.conversations import access, importing
from chat.conversations.export import (
    IMPORT_MAX_BYTES,
    ImportError_,
    export_data,
    export_markdown,
    parse_import,
)
from chat.models import Conversation


def _filename(conversation: Conversation, ext: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", conversation.display_title.lower()).strip("-")[:60]
    return f"{slug or 'conversation'}-{conversation.pk}.{ext}"


@require_GET
@login_required
def export_json(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = access.get_conversation(request.user, pk)
    response = JsonResponse(
        export_data(conversation), json_dumps_params={"ensure_ascii": False, "indent": 2}
    )
    response["Content-Disposition"] = f'attachment; filename="{_filename(conversation, "json")}"'
    return response


@require_GET
@login_required
def export_md(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = access.get_conversation(request.user, pk)
    response = HttpResponse(
        export_markdown(conversation), content_type="text/markdown; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{_filename(conversation, "md")}"'
    return response


@require_POST
@login_required
def import_conversation(request: HttpRequest) -> HttpResponse:
    """A JSON export as an uploaded file (`file`) or as the request body (application/json)."""
    upload = request.FILES.get("file")
    json_body = request.content_type == "application/json"
    try:
        if upload is not None:
            if upload.size > IMPORT_MAX_BYTES:
                raise ImportError_(
                    f"The file is larger than {IMPORT_MAX_BYTES // (1024 * 1024)} MB."
                )
            raw = upload.read(IMPORT_MAX_BYTES + 1)
        elif json_body:
            raw = request.body
        else:
            raise ImportError_("Choose a JSON export to import.")
        data = parse_import(raw)
    except ImportError_ as exc:
        if "application/json" in request.headers.get("Accept", "") or json_body:
            return JsonResponse({"error": str(exc)}, status=400)
        from django.contrib import messages as flash

        flash.error(request, f"Import failed: {exc}")
        return redirect("chat:index")
    conversation = importing.conversation_import(owner=request.user, **data)
    url = reverse("chat:conversation", args=[conversation.pk])
    if "application/json" in request.headers.get("Accept", "") or json_body:
        return JsonResponse({"id": conversation.pk, "url": url}, status=201)
    return redirect(url)
