"""The closed set of errors the service answers with.

Each error carries its HTTP status, so that one middleware renders them all and no handler
repeats the mapping from failure to status code.
"""

from collections.abc import Mapping
from typing import ClassVar

RETRY_SOON_S = 1
"""The ``Retry-After`` of every answer that says "busy for now" (a storage at its share, a
pool or the connections full): what frees a slot is a request ending, which takes about as
long as a request may (under a second, mostly). One value, so that clients back off alike."""


class ServiceError(Exception):
    """A failure with a message that is safe to show to the client."""

    status: ClassVar[int] = 500
    retry_after_s: ClassVar[int | None] = None
    """``Retry-After`` of every answer of this class, unless the error names its own."""

    def __init__(
        self,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        retry = retry_after_s if retry_after_s is not None else self.retry_after_s
        if retry is not None:
            headers = {**(headers or {}), "Retry-After": str(retry)}
        self.headers = headers


class BadRequestError(ServiceError):
    status = 400


class UnauthorizedError(ServiceError):
    status = 401


class ForbiddenError(ServiceError):
    status = 403


class NotFoundError(ServiceError):
    status = 404


class ConflictError(ServiceError):
    status = 409


class PreconditionFailedError(ServiceError):
    """A conditional request's condition (If-Match, If-None-Match) did not hold."""

    status = 412


class PayloadTooLargeError(ServiceError):
    status = 413


class TooManyRequestsError(ServiceError):
    """A storage at its share of a pool shared with others: the answer says when to try
    again (``Retry-After``)."""

    status = 429
    retry_after_s = RETRY_SOON_S


class InsufficientStorageError(ServiceError):
    """Elasticsearch cannot hold what was asked for (its shard limit): no use trying again
    before an operator changes something."""

    status = 507


class ServiceUnavailableError(ServiceError):
    """Busy for now: the answer says when to try again (``Retry-After``)."""

    status = 503
    retry_after_s = RETRY_SOON_S
