"""One exception tree; each error carries its HTTP status and renders as the contract's JSON."""
from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the API turns into a JSON response."""

    status = 500
    name = "InternalError"

    def __init__(self, detail: object = "") -> None:
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail

    def to_body(self) -> dict:
        return {"error": self.name, "detail": self.detail}


class BadRequest(ServiceError):
    status, name = 400, "BadRequest"


class Unauthorized(ServiceError):
    status, name = 401, "Unauthorized"


class Forbidden(ServiceError):
    status, name = 403, "Forbidden"


class NotFound(ServiceError):
    status, name = 404, "NotFound"


class Conflict(ServiceError):
    status, name = 409, "Conflict"


class MethodNotAllowed(ServiceError):
    status, name = 405, "MethodNotAllowed"


class PayloadTooLarge(ServiceError):
    status, name = 413, "PayloadTooLarge"


class ValidationFailed(ServiceError):
    """422; `detail` is a list of {"loc", "msg", "type"} like FastAPI's."""

    status, name = 422, "ValidationError"

    def __init__(self, errors: list[dict]) -> None:
        super().__init__(errors)

    @classmethod
    def single(cls, loc: list, msg: str, type_: str = "value_error") -> "ValidationFailed":
        return cls([{"loc": loc, "msg": msg, "type": type_}])


class TooManyRequests(ServiceError):
    """429; `retry_after` (whole seconds) is sent as the Retry-After header."""

    status, name = 429, "TooManyRequests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class ServerBusy(ServiceError):
    """503 with Retry-After: every slot of a bounded resource (open event streams) is taken."""

    status, name = 503, "ServerBusy"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class BadGateway(ServiceError):
    """502: no A1111 instance answered a call passed through to it, and nothing was cached."""

    status, name = 502, "BadGateway"


class StoreUnavailable(ServiceError):
    """The job store cannot be reached; raised by backends in place of driver errors."""

    status, name = 503, "StoreUnavailable"


class A1111Error(Exception):
    """Base of errors from an A1111 instance (never an API response by itself)."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, detail: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail


class A1111Unavailable(A1111Error):
    """Connection refused or dropped, timeout, a 502/503/504, or a 5xx naming no exception: the
    instance could not do it now, so another attempt (elsewhere if possible) may succeed."""

    retryable = True
    code = "a1111_unavailable"


class A1111OutOfMemory(A1111Error):
    """A 500 whose exception says the GPU (or host) ran out of memory: this instance cannot hold
    the job now; one other instance may, so it is worth one attempt there."""

    retryable = True
    code = "a1111_out_of_memory"


class A1111Failed(A1111Error):
    """A 500 naming another exception (`TypeError`, `ZeroDivisionError`): A1111 crashed on this
    request and would crash again, so it is final although the status says server error."""

    code = "a1111_failed"


class A1111Rejected(A1111Error):
    """A 4xx from A1111 (bad request, unknown script, missing init image): final."""

    code = "a1111_rejected"
