"""JSON endpoints for uploads of images and documents: start, finish, cancel, open, limits
(docs/images.md, docs/documents.md).

Thin: the work is in chat/uploads/attachments.py, every S3 call in chat/uploads/storage.py.
Login is required; ownership is
checked by the service (someone else's attachment is not found); CSRF applies to every write.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat import policies
from chat.models import Attachment
from chat.uploads import attachments, documents, errors, images, storage
from chat.uploads.errors import AttachmentError

STATUS_BY_CODE = {
    errors.NOT_FOUND: 404,
    errors.RATE_LIMITED: 429,
    errors.STORAGE_UNAVAILABLE: 503,
    errors.BUSY: 503,
}


def error_response(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def _from_error(exc: AttachmentError) -> JsonResponse:
    response = error_response(exc.code, exc.message, STATUS_BY_CODE.get(exc.code, 400))
    if exc.code == errors.BUSY:
        response["Retry-After"] = str(errors.BUSY_RETRY_AFTER_S)
    return response


def json_login_required(view: Callable) -> Callable:
    """401 with a JSON error instead of a redirect: these endpoints are called by scripts."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return error_response("unauthorized", "Log in to upload files.", 401)
        return view(request, *args, **kwargs)

    return wrapper


def attachment_dict(attachment: Attachment) -> dict:
    return {
        "id": attachment.pk,
        "kind": attachment.kind,
        "state": attachment.state,
        "width": attachment.width,
        "height": attachment.height,
        "byte_size": attachment.byte_size,
        "token_estimate": attachment.token_estimate,
        "page_count": attachment.page_count,
        "has_text_layer": attachment.has_text_layer,
        "thumbnail_url": reverse("chat:attachment", args=[attachment.pk]),
    }


@require_GET
@json_login_required
def limits(request: HttpRequest) -> JsonResponse:
    """The server's limits as the user's policy narrows them (chat/policies.py)."""
    policy = policies.policy_for(request.user)
    return JsonResponse(
        {
            "content_types": list(images.KINDS),
            "max_bytes": policy.file_bytes(settings.IMAGE_UPLOAD_MAX_BYTES),
            "browser_long_edge_px": settings.IMAGE_BROWSER_LONG_EDGE_PX,
            "max_per_message": policy.files_per_message(),
            "documents_allowed": policy.documents,
            # Apart from content_types, which the page's picker filters images with; empty
            # where the policy allows no documents.
            "document_types": list(documents.KINDS) if policy.documents else [],
            "document_max_bytes": policy.file_bytes(settings.DOCUMENT_MAX_BYTES),
            "text_document_max_bytes": policy.file_bytes(settings.TEXT_DOCUMENT_MAX_BYTES),
            "document_max_pages": settings.DOCUMENT_MAX_PAGES,
        }
    )


@require_POST
@json_login_required
def start(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        return error_response("invalid_request", "The body must be a JSON object.", 400)
    try:
        attachment, upload = attachments.start_upload(
            owner=request.user,
            content_type=body.get("content_type"),
            byte_size=body.get("byte_size"),
            name=body.get("name") or "",
        )
    except AttachmentError as exc:
        return _from_error(exc)
    except policies.Forbidden as exc:
        return error_response(exc.code, exc.message, 403)
    return JsonResponse(
        {
            "id": attachment.pk,
            "upload": upload,
            "max_bytes": attachment.max_upload_bytes,
            "expires_in": settings.PRESIGN_POST_EXPIRY_SECONDS,
        },
        status=201,
    )


@require_POST
@json_login_required
def finish(request: HttpRequest, pk: int) -> JsonResponse:
    try:
        attachment = attachments.finish_upload(owner=request.user, attachment_id=pk)
    except AttachmentError as exc:
        return _from_error(exc)
    except policies.Forbidden as exc:
        return error_response(exc.code, exc.message, 403)
    return JsonResponse(attachment_dict(attachment))


@require_http_methods(["GET", "HEAD", "DELETE"])
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: a redirect to a fresh presigned GET of the verified image. DELETE: cancel."""
    if request.method == "DELETE":
        return _cancel(request, pk)
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    attachment = Attachment.objects.filter(
        pk=pk, owner=request.user, state=Attachment.State.VERIFIED
    ).first()
    if attachment is None:
        raise Http404("No such image")
    try:
        url = storage.presigned_get_url(attachment)
    except AttachmentError as exc:
        return _from_error(exc)
    response = HttpResponseRedirect(url)
    # The browser may reuse the redirect while the URL it points to is still valid.
    response["Cache-Control"] = f"private, max-age={settings.PRESIGN_GET_EXPIRY_SECONDS // 2}"
    return response


@json_login_required
def _cancel(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        attachments.cancel_upload(owner=request.user, attachment_id=pk)
    except AttachmentError as exc:
        return _from_error(exc)
    return HttpResponse(status=204)
