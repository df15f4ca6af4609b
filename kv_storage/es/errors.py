"""Turns Elasticsearch client failures into messages: a class for clients, details for logs.

``classify`` is what an answer says: the kind of failure (unreachable, did not answer in time,
overloaded, refused the request), nothing of Elasticsearch's internals. ``describe`` is what
the log says: the cause as Elasticsearch or the client gave it, for the operator. Neither
carries credentials: the client keeps those in its own settings, not in the URLs shown.
"""

from collections.abc import Mapping
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, SerializationError, TransportError
from elasticsearch import ApiError

from kv_storage.es.tls import describe_tls


class ItemError(Exception):
    """An item of a request of many (a ``_bulk`` action, an ``_mget`` document) failed for a
    reason the caller did not expect; the operation it belonged to fails, the others of the
    request do not."""

    def __init__(self, item: Mapping[str, Any], *, what: str = "bulk item") -> None:
        error = item.get("error")
        reason = error.get("reason") if isinstance(error, Mapping) else error
        status = f" ({item['status']})" if "status" in item else ""
        super().__init__(f"Elasticsearch refused a {what}{status}: {reason}")


_BLOCKED = "cluster_block_exception"
_WRITE_BLOCK = "index write (api)"
"""How Elasticsearch names the write block in a refusal; the disk watermark's block, which
refuses writes too, is another."""


def refused_by_write_block(item: Mapping[str, Any]) -> bool:
    """Whether a ``_bulk`` item was refused by its index's write block: its storage was
    deleted, most likely (``kv_storage.es.retirement``; or an operator closed the index to
    writes)."""
    error = item.get("error")
    return (
        isinstance(error, Mapping)
        and error.get("type") == _BLOCKED
        and _WRITE_BLOCK in str(error.get("reason", ""))
    )


def is_elasticsearch_error(error: BaseException) -> bool:
    return isinstance(error, ApiError | TransportError | ItemError)


def is_starting(error: BaseException) -> bool:
    """Whether Elasticsearch may just not be up yet: no connection, no answer, or 503. A TLS
    failure is not one of those: waiting does not make a certificate trusted."""
    if isinstance(error, TransportConnectionError):
        return describe_tls(error) is None
    if isinstance(error, ConnectionTimeout):
        return True
    return isinstance(error, ApiError) and error.meta.status == 503


_REFUSED_FOR_CONTENT = frozenset({400, 413})


def refused_for_its_content(error: BaseException) -> bool:
    """Elasticsearch refused a whole request for what it holds (a body it cannot parse or
    take, or one too large), before carrying out any of it; a request of other content may
    succeed. Not a refusal of an item, nor a failure of Elasticsearch itself."""
    return isinstance(error, ApiError) and error.meta.status in _REFUSED_FOR_CONTENT


def answer_status(error: BaseException) -> int:
    """The service's status for a failure of Elasticsearch: 413 when Elasticsearch refused the
    request for its size (``http.max_content_length``; JSON escaping can make a body the
    service accepted larger than that), else 500."""
    return 413 if isinstance(error, ApiError) and error.meta.status == 413 else 500


_OVERLOADED = frozenset({429, 502, 503, 504})


def classify(error: BaseException) -> str:
    """The kind of failure, for a client: no index names, no reasons, no stack."""
    if isinstance(error, ConnectionTimeout):
        return "Elasticsearch did not answer in time"
    if isinstance(error, TransportConnectionError):
        # A TLS problem is the operator's to fix and names no secret: say which.
        return describe_tls(error) or "Elasticsearch is unreachable"
    if isinstance(error, ApiError) and error.meta.status == 413:
        return describe(error)  # the client's own request was too large: tell it so
    if isinstance(error, ApiError) and error.meta.status in _OVERLOADED:
        return "Elasticsearch is overloaded"
    if isinstance(error, ApiError | ItemError):
        return "Elasticsearch refused the request"
    return "the request to Elasticsearch failed"


def describe(error: BaseException) -> str:
    """The cause, in full, for the log (any exception; Elasticsearch's in its own words)."""
    tls = describe_tls(error) if isinstance(error, TransportConnectionError) else None
    if tls is not None:
        return tls
    if isinstance(error, ConnectionTimeout):
        return "Elasticsearch did not answer in time"
    if isinstance(error, TransportConnectionError):
        return f"Elasticsearch is unreachable: {error.message}"
    if isinstance(error, ApiError) and error.meta.status == 413:
        return (
            "the request is larger than Elasticsearch accepts (its http.max_content_length); "
            "JSON escaping can make a value several times its own size"
        )
    if isinstance(error, ApiError):
        reason = _reason(error)
        return f"Elasticsearch answered {error.meta.status} ({error.error})" + (
            f": {reason}" if reason else ""
        )
    if isinstance(error, ItemError):
        return str(error)
    if isinstance(error, SerializationError):
        # Its message holds the whole body it could not encode: a registry document holds
        # the storage's secret.
        return "a request body could not be encoded as JSON (not logged: it may hold secrets)"
    if isinstance(error, TransportError):
        return f"Elasticsearch request failed: {error.message}"
    return repr(error)  # not a failure of Elasticsearch: what it is, for the log


def _reason(error: ApiError) -> str:
    body = error.body
    if isinstance(body, dict):
        detail = body.get("error")
        if isinstance(detail, dict):
            reason = detail.get("reason")
            if isinstance(reason, str):
                return reason
    return ""
