"""Ratings of replies: thumbs up or down with an optional comment, one per user and message.

Only the conversation's owner rates its replies (anything else is a 404, as for the
conversation itself). The comment is the user's text: stored as given, within its limit, and
shown to admins as text only.
"""

from __future__ import annotations

from django.http import Http404

from chat.conversations import access
from chat.errors import UserFacingError
from chat.models import Feedback, Message
from chat.text import has_unstorable


class InvalidFeedback(UserFacingError):
    code = "invalid_feedback"


def rated_message(*, user, conversation_id: int, message_id: int) -> Message:
    """A finished reply of the user's conversation, or Http404 (someone else's, missing, a
    user's message or a reply still being written)."""
    conversation = access.get_conversation(user, conversation_id)
    message = (
        Message.objects.filter(
            conversation=conversation, pk=message_id, role=Message.Role.ASSISTANT
        )
        .exclude(status=Message.Status.STREAMING)
        .first()
    )
    if message is None:
        raise Http404("No such reply")
    return message


def rate(*, user, message: Message, rating: str, comment: str) -> Feedback | None:
    """Set the user's rating of `message` (a second one changes the first); an empty rating
    takes it back. Raises InvalidFeedback for a rating other than up or down, a comment
    over its limit or holding characters that cannot be stored."""
    if rating == "":
        Feedback.objects.filter(message=message, user=user).delete()
        return None
    if rating not in Feedback.Rating.values:
        raise InvalidFeedback("The rating is up or down.")
    comment = comment.strip()
    if len(comment) > Feedback.COMMENT_MAX_CHARS:
        raise InvalidFeedback(
            f"The comment is too long: {len(comment):,} characters, "
            f"the limit is {Feedback.COMMENT_MAX_CHARS:,}."
        )
    if has_unstorable(comment):
        raise InvalidFeedback("The comment holds characters that cannot be stored.")
    feedback, _ = Feedback.objects.update_or_create(
        message=message, user=user, defaults={"rating": rating, "comment": comment}
    )
    return feedback


def as_dict(feedback: Feedback | None) -> dict | None:
    if feedback is None:
        return None
    return {"rating": feedback.rating, "comment": feedback.comment}


def by_message(*, user_id: int, message_ids: list[int]) -> dict[int, dict]:
    """The user's rating of each of `message_ids` that has one — one query."""
    if not message_ids:
        return {}
    rows = Feedback.objects.filter(user_id=user_id, message_id__in=message_ids)
    return {f.message_id: as_dict(f) for f in rows}
