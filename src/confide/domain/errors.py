"""Domain errors. Each carries a stable machine code and a human message.

The web layer maps the classes to HTTP statuses; the code travels unchanged to API
clients, so codes are part of the public contract (docs/api.md lists them).
"""

import math


class DomainError(Exception):
    """Base of every error a use case may raise on purpose."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidInput(DomainError):
    status = 422


class NotFound(DomainError):
    """Missing and forbidden look the same (PM7): one class, one message."""

    status = 404

    def __init__(self, what: str = "resource") -> None:
        super().__init__("not_found", f"No such {what}.")


class Forbidden(DomainError):
    """A refusal about something the actor may already see (a setting, a person of
    their own practice). Never used for objects the actor may not know exist."""

    status = 403


class Conflict(DomainError):
    status = 409


class NotAuthenticated(DomainError):
    status = 401

    def __init__(self) -> None:
        super().__init__("not_authenticated", "Sign in to continue.")


class Gone(DomainError):
    """Existed for the caller, and is no more (an expired or deleted export download)."""

    status = 410


class TryLater(DomainError):
    """Refused for now, not for good: nothing was done, and the answer says when to try
    again (`Retry-After`, whole seconds, web/errors.py)."""

    def __init__(self, code: str, message: str, retry_after: float) -> None:
        super().__init__(code, message)
        self.retry_after = max(1, math.ceil(retry_after))


class RateLimited(TryLater):
    """T11: this sender is over its send rate; the others are not held up."""

    status = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "rate_limited",
            "You are sending messages too fast. Nothing was saved; try again in a moment.",
            retry_after,
        )


class Overloaded(TryLater):
    """T39: the server is at its admission bound; shed now rather than queue without
    end (docs/operations.md, "Overload")."""

    status = 503

    def __init__(self, retry_after: float = 1) -> None:
        super().__init__(
            "overloaded",
            "The service is busy. Nothing was saved; please try again in a moment.",
            retry_after,
        )
