"""The one base class for failures and refusals the user is told of.

Each carries a `code` (docs/protocol.md lists them), a `message` written for the user and
whether trying again can help (`retryable`). The socket turns any of them into an `error` frame
in one place (chat/replies/consumers.py); views turn them into their own responses. A subclass
gives its defaults as class attributes, so `raise Busy` needs no arguments.
"""

from __future__ import annotations


class UserFacingError(Exception):
    code = "invalid_frame"
    message = "The request was refused."
    retryable = False

    def __init__(
        self, message: str | None = None, *, code: str | None = None, retryable: bool | None = None
    ) -> None:
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        super().__init__(self.message)
