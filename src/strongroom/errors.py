"""Domain errors raised by the service; the server maps each to one HTTP status and a JSON message."""

from __future__ import annotations

ECHO_MAX = 100  # characters of a client's value a message may quote


def clipped(text: str, limit: int = ECHO_MAX) -> str:
    """`text` as a message may quote it: at most `limit` characters, the cut marked with `…`."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class StrongroomError(Exception):
    """Base for errors a caller can act on; `message` must never contain a secret value."""

    status_code = 400

    def __init__(self, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


class InvalidInput(StrongroomError):
    """The request is well-formed JSON but a field breaks a rule; `errors` names each field."""

    status_code = 422


class MalformedRequest(StrongroomError):
    """The body is not JSON or not an object."""

    status_code = 400


class Unauthorized(StrongroomError):
    """Missing, unknown or revoked API token."""

    status_code = 401


class Forbidden(StrongroomError):
    """The token is valid but lacks the scope or role for this action; `target` names the credential refused,
    for the audit record, when the route's own id does not."""

    status_code = 403

    def __init__(self, message: str, errors: dict[str, str] | None = None, *, target: str | None = None) -> None:
        super().__init__(message, errors)
        self.target = target


class NotFound(StrongroomError):
    """Unknown id, or an id the caller may not see: both answer the same, so ids cannot be probed."""

    status_code = 404


class Hidden(NotFound):
    """The resource exists but the caller has no role on it: answered exactly as NotFound (so ids cannot be
    probed), and audited as an authorisation denial."""

    def __init__(self, message: str, *, target: str) -> None:
        super().__init__(message)
        self.target = target


class Conflict(StrongroomError):
    """A uniqueness rule (such as one name per owner) would be broken."""

    status_code = 409


class PreconditionFailed(StrongroomError):
    """An If-Match revision is no longer current: someone else changed the credential since it was read."""

    status_code = 412

    def __init__(self, message: str, errors: dict[str, str] | None = None, *, current_revision: int | None) -> None:
        super().__init__(message, errors)
        self.current_revision = current_revision


class TooManyRequests(StrongroomError):
    """This client failed authentication too often; it may try again after `retry_after` seconds."""

    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(StrongroomError):
    """The database is unreachable, locked or timing out; the client may retry after `retry_after` seconds."""

    status_code = 503

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MasterKeyError(StrongroomError):
    """The master key needed to open stored secrets is missing or wrong; raised at start, not per request."""

    status_code = 500


class DatabaseFileError(StrongroomError):
    """The SQLite file cannot be trusted as configured (a symbolic link); raised when the store opens, not per
    request."""

    status_code = 500
