"""The error hierarchy services raise; the API maps each type to problem+json in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One thing wrong with the input: where (`location`, e.g. ``("line", 500, "kind")``) and what."""

    location: tuple[str | int, ...]
    message: str

    @property
    def dotted(self) -> str:
        """`line.500.kind`: the location as the errors' details name it."""
        return ".".join(str(part) for part in self.location)


class SophiaError(Exception):
    """Base of every error a service raises on purpose. `context`: more the client needs to act on
    it (an RFC 9457 extension member each, e.g. the ids of a batch to send again)."""

    title = "Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context: dict[str, object] = {}


class Invalid(SophiaError):
    """The input is malformed or breaks a rule; `errors` say where."""

    title = "Invalid input"

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


class NotFound(SophiaError):
    """The thing asked for does not exist (or is deleted)."""

    title = "Not found"


class Conflict(SophiaError):
    """The request clashes with the current state."""

    title = "Conflict"


class PreconditionFailed(SophiaError):
    """An `If-Match` style precondition did not hold: someone else wrote first."""

    title = "Precondition failed"


class Unauthorized(SophiaError):
    """No credentials, or credentials that do not verify."""

    title = "Unauthorized"


class Forbidden(SophiaError):
    """Valid credentials without the scope the operation needs."""

    title = "Forbidden"


class TooManyRequests(SophiaError):
    """The caller went past a limit; it may try again after `retry_after_s`."""

    title = "Too many requests"

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Unavailable(SophiaError):
    """A dependency is down or overloaded; the caller may retry after `retry_after_s`."""

    title = "Service unavailable"

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
