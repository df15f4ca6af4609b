"""The service's error answers as exceptions: each carries the status, the service's own
message (its ``{"error": ...}`` body) and the request id to quote when reporting it."""

from typing import ClassVar


class KvStorageError(Exception):
    """An answer of the service that is not a success."""

    status: ClassVar[int | None] = None
    """The status of every error of this class; ``None``: any status (see ``status_code``)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{status_code}: {message}")
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.retry_after_s = retry_after_s
        """``Retry-After`` of a 429 or 503: when the service said to try again."""


class BadRequestError(KvStorageError):
    status = 400


class UnauthorizedError(KvStorageError):
    """The ``Secret-Key`` (or the administration token) is missing or wrong."""

    status = 401


class ForbiddenError(KvStorageError):
    status = 403


class NotFoundError(KvStorageError):
    """The storage does not exist (or was deleted, or expired), or the key is missing."""

    status = 404


class ConflictError(KvStorageError):
    status = 409


class PreconditionFailedError(KvStorageError):
    """A conditional write's condition did not hold: the key is at another version, is gone,
    or (``if_absent``) exists. Nothing changed."""

    status = 412


class PayloadTooLargeError(KvStorageError):
    status = 413


class TooManyRequestsError(KvStorageError):
    """The storage holds its share of a pool on the instance; try again after
    ``retry_after_s``."""

    status = 429


class ServerError(KvStorageError):
    """Elasticsearch or the service failed (500), or it could not hold the storage (507)."""


class UnavailableError(KvStorageError):
    """The instance is busy for now (503); try again after ``retry_after_s``."""

    status = 503


class CompareAndSetError(KvStorageError):
    """``compare_and_set`` lost the race to other writers on every one of its attempts."""


ERRORS_BY_STATUS: dict[int, type[KvStorageError]] = {
    error.status: error
    for error in (
        BadRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        ConflictError,
        PreconditionFailedError,
        PayloadTooLargeError,
        TooManyRequestsError,
        UnavailableError,
    )
    if error.status is not None
}


def error_for(
    status_code: int, message: str, request_id: str | None, retry_after_s: float | None
) -> KvStorageError:
    kind = ERRORS_BY_STATUS.get(status_code, ServerError if status_code >= 500 else KvStorageError)
    return kind(
        message, status_code=status_code, request_id=request_id, retry_after_s=retry_after_s
    )
