"""Turns Elasticsearch client failures into messages that name the cause.

The messages go into answers and logs, so they carry what an operator needs (unreachable,
timed out, which error Elasticsearch gave) and never credentials: the client keeps those in
its own settings, not in the URLs these messages show.
"""

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError

from elasticsearch import ApiError


def is_elasticsearch_error(error: BaseException) -> bool:
    return isinstance(error, ApiError | TransportError)


def describe(error: BaseException) -> str:
    if isinstance(error, ConnectionTimeout):
        return "Elasticsearch did not answer in time"
    if isinstance(error, TransportConnectionError):
        return f"Elasticsearch is unreachable: {error.message}"
    if isinstance(error, ApiError):
        reason = _reason(error)
        return f"Elasticsearch answered {error.meta.status} ({error.error})" + (
            f": {reason}" if reason else ""
        )
    if isinstance(error, TransportError):
        return f"Elasticsearch request failed: {error.message}"
    return f"Elasticsearch request failed: {type(error).__name__}"


def _reason(error: ApiError) -> str:
    body = error.body
    if isinstance(body, dict):
        detail = body.get("error")
        if isinstance(detail, dict):
            reason = detail.get("reason")
            if isinstance(reason, str):
                return reason
    return ""
