"""A reply's rating by its conversation's owner (chat/conversations/feedback.py)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from chat.conversations import feedback


@require_POST
@login_required
def rate(request: HttpRequest, pk: int, message_id: int) -> JsonResponse:
    """`rating` = up | down | "" (take it back), `comment` optional; answers the rating."""
    message = feedback.rated_message(user=request.user, conversation_id=pk, message_id=message_id)
    try:
        saved = feedback.rate(
            user=request.user,
            message=message,
            rating=request.POST.get("rating", ""),
            comment=request.POST.get("comment", ""),
        )
    except feedback.InvalidFeedback as exc:
        return JsonResponse({"error": exc.message}, status=400)
    return JsonResponse({"message_id": message.pk, "feedback": feedback.as_dict(saved)})
