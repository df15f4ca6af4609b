"""Conditional requests on single keys: ``If-Match`` and ``If-None-Match``.

Every write of a key changes its version (``kv_storage.model.Version``), which the answers of
a get and of a set carry as an ``ETag``. A client that read a version can write only if the
key is still at it (``If-Match``: compare-and-set), create a key only if it does not exist
(``If-None-Match: *``), or wait for the key to move on from a version (``If-None-Match`` with
``?wait=``). Elasticsearch checks the condition itself, in the same operation as the write
(``if_seq_no``/``if_primary_term``, or ``create``): never a read then a write. A header that
is not one of our tags is 400; a condition that does not hold is 412 and changes nothing.
"""

from aiohttp import hdrs, web

from kv_storage.errors import BadRequestError
from kv_storage.model import Condition, MalformedTagError, Version, parse_etag


def write_condition(request: web.Request) -> Condition | None:
    """The condition a set or delete carries, or ``None`` for an unconditional one."""
    if_match = request.headers.get(hdrs.IF_MATCH)
    if_none_match = request.headers.get(hdrs.IF_NONE_MATCH)
    if if_match is not None and if_none_match is not None:
        raise BadRequestError("give If-Match or If-None-Match, not both")
    if if_match is not None:
        return Condition(version=_tag(if_match, hdrs.IF_MATCH))
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise BadRequestError(
                "If-None-Match on a write takes only * (create the key if it does not exist)"
            )
        return Condition(absent=True)
    return None


def known_version(request: web.Request) -> Version | None:
    """The version a get's ``If-None-Match`` names, if any."""
    if_none_match = request.headers.get(hdrs.IF_NONE_MATCH)
    return None if if_none_match is None else _tag(if_none_match, hdrs.IF_NONE_MATCH)


def _tag(value: str, header: str) -> Version:
    try:
        return parse_etag(value)
    except MalformedTagError as error:
        raise BadRequestError(
            f'{header}: {error} (one tag, as an ETag header gave it, such as "1-42")'
        ) from None
