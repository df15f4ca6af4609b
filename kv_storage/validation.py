"""The one way requests are validated: each handler declares a schema per request part, and
the envelope (``kv_storage.envelope``) has every part loaded here with webargs before the
handler runs, keeping the results under a typed request key. A failure is a marshmallow
``ValidationError``, answered with 400.

Declared with aiohttp-apispec's decorators (``querystring_schema``, ``request_schema``: they
also document the part) or, for the parts of the original's API that no schema of named
fields describes, with ``validates``: ``key`` (the key in the path, decoded strictly as
UTF-8), ``value`` (a single set's body, as text) and ``body`` (a bare JSON array or object).
The schemas live in ``schemas/``; what the deployment configures (the largest key and value)
reaches them through marshmallow's context (``schemas.storage.LIMITS``).

Bodies are read only here and only after the caller was authorised (the envelope checks that
first), and never beyond a bound: a JSON body over ``server.max-json-body-size`` is refused
with 413 as soon as its size is known, before it is parsed, so that nobody can make the
service parse many megabytes of JSON.
"""

import inspect
import json
import math
import re
import weakref
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote_to_bytes

import orjson
from aiohttp import web
from marshmallow import EXCLUDE, Schema, ValidationError, fields
from webargs import core
from webargs.aiohttpparser import AIOHTTPParser

from kv_storage.app_keys import CONFIG
from kv_storage.config import Config
from kv_storage.errors import BadRequestError, PayloadTooLargeError
from schemas.storage import LIMITS, NOT_UTF8, Limits

_VALIDATED = web.RequestKey("validated", dict[str, Any])

_CHUNK_BYTES = 64 * 1024


async def read_body(request: web.Request, max_bytes: int, *, what: str = "body") -> bytes:
    """The whole body, refused with 413 once it is known to exceed ``max_bytes``.

    A declared ``Content-Length`` over the bound is refused before a byte is read; a chunked
    body is read only up to the bound.
    """
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise _too_large(what, max_bytes)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(what, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(what: str, max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the {what} is larger than {max_bytes} bytes")


def require_content_type(request: web.Request, expected: str) -> None:
    """Media-type parameters such as ``; charset=utf-8`` are fine."""
    if request.content_type != expected:
        given = request.headers.get("Content-Type", "none")
        raise BadRequestError(f"the content type must be {expected}, not {given}")


_LONG_NUMBER = re.compile(rb"\d{19}")
"""Digits enough to pass 2^63: orjson would read such an integer as a float."""

MAX_NUMBER_DIGITS = 4300
"""The most digits of an integer in a JSON body: Python's own bound on converting between text
and ``int`` (``sys.int_info.default_max_str_digits``), which keeps either conversion from
taking quadratic time. The service refuses longer numbers in its own words."""


class _NotRead(ValueError):
    """Syntactically JSON, yet not taken: the message says why, for the client."""


def _integer(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_NUMBER_DIGITS:
        raise _NotRead(f"a number has more than {MAX_NUMBER_DIGITS} digits")
    return int(text)


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _NotRead(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is too large")
    return number


def _no_constant(name: str) -> NoReturn:
    raise _NotRead(f"{name} is not a JSON value")


def _refuse_unpaired_surrogates(document: Any) -> None:
    """orjson refuses ``"\\ud800"`` (half of a UTF-16 pair, no character); the standard
    library takes it, and such a string fails later, where it is encoded (an Elasticsearch
    request failed with 500). Walked without recursion: the document may nest deeply."""
    pending = [document]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _NotRead(
                    "a string holds an unpaired surrogate (\\ud800 to \\udfff alone), "
                    "which is no character"
                ) from None
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def parse_json(raw: bytes) -> Any:
    """JSON text as Python values; 400 for anything that is not JSON in UTF-8.

    orjson is fast and refuses nesting deeper than 1024 levels. The standard library reads
    bodies with integers that orjson would round (a multi-set value of 20 digits must be stored
    as written), and what orjson refuses, to word the error with a position. It is held to
    what orjson takes (no ``NaN`` or ``Infinity``, no number beyond a double, no unpaired
    surrogate) and to integers of at most ``MAX_NUMBER_DIGITS``, refused in the service's
    words: Python's (``use sys.set_int_max_str_digits()``) are no concern of a client. Both
    run on at most ``server.max-json-body-size`` bytes.
    """
    if not _LONG_NUMBER.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        document = json.loads(
            raw.decode("utf-8"),
            parse_int=_integer,
            parse_float=_finite,
            parse_constant=_no_constant,
        )
        _refuse_unpaired_surrogates(document)
    except UnicodeDecodeError:
        raise BadRequestError("the body is not valid UTF-8") from None
    except RecursionError:
        raise BadRequestError("the body is JSON nested too deeply") from None
    except (json.JSONDecodeError, _NotRead) as error:
        raise BadRequestError(f"the body is not valid JSON: {error}") from None
    return document


async def read_json(request: web.Request) -> Any:
    """The body of a request that must be JSON, within ``server.max-json-body-size`` (and
    ``server.max-body-size``, the bound of every body)."""
    require_content_type(request, "application/json")
    server = request.app[CONFIG].server
    limit = min(server.max_json_body_size, server.max_body_size)
    return parse_json(await read_body(request, limit, what="JSON body"))


class _BoundedParser(AIOHTTPParser):
    """webargs' parser, reading JSON bodies through ``read_json`` (bounded, and with the
    same answers to bad JSON as every other route), and the parts of the original's API."""

    async def load_json(self, req: web.Request, schema: Schema) -> Any:
        if not req.body_exists:
            return core.missing
        return await read_json(req)


_parser = _BoundedParser()


@_parser.location_loader("key")
def _load_key(request: web.Request, schema: Schema) -> dict[str, object]:
    """The key as the client percent-encoded it in ``/<operation>/<id>/<key>``, decoded
    strictly: aiohttp keeps invalid sequences such as ``%FF`` as they are. Taken from the URL,
    so a request target in absolute form (``PUT http://host/set/...``) names the same key."""
    raw = request.rel_url.raw_path.split("/", 3)[3]
    try:
        return {"key": unquote_to_bytes(raw).decode("utf-8")}
    except UnicodeDecodeError:
        return {"key": NOT_UTF8}


@_parser.location_loader("value")
async def _load_value(request: web.Request, schema: Schema) -> dict[str, object]:
    """A single value: the body as text, at most ``server.max-body-size`` bytes."""
    raw = await read_body(request, request.app[CONFIG].server.max_body_size)
    try:
        return {"value": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value": NOT_UTF8}


@_parser.location_loader("body")
async def _load_body(request: web.Request, schema: Schema) -> dict[str, object]:
    """A bare JSON array or object of keys, at most ``server.max-keys-per-request`` of them,
    counted before any key is looked at."""
    document = await read_json(request)
    limit = request.app[CONFIG].server.max_keys_per_request
    if isinstance(document, list | dict) and len(document) > limit:
        raise BadRequestError(
            f"the body has {len(document)} keys; at most {limit} are allowed in one request "
            "(server.max-keys-per-request)"
        )
    return {"body": document}


HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


def validates(location: str, field: "fields.Field[Any]") -> Callable[[HandlerT], HandlerT]:
    """Declares that ``location`` (``key``, ``value`` or ``body``) of a handler's requests is
    loaded by ``field``; the handler finds the result with ``validated(request, location)``."""
    schema = Schema.from_dict({location: field}, name=f"{location.title()}Schema")()

    def declare(handler: HandlerT) -> HandlerT:
        marked: Any = handler
        if not hasattr(marked, "__apispec__"):  # as aiohttp-apispec's decorators expect
            marked.__apispec__ = {"schemas": [], "responses": {}, "parameters": []}
            marked.__schemas__ = []
        marked.__schemas__.append(
            {"schema": schema, "location": location, "whole": True, "field": field}
        )
        return handler

    return declare


@_parser.error_handler
def _raise_validation_error(
    error: ValidationError,
    request: web.Request,
    schema: Schema,
    *,
    error_status_code: int | None,
    error_headers: dict[str, str] | None,
) -> NoReturn:
    raise error


Declared = tuple[dict[str, Any], ...]
"""What a handler declared of its requests' parts: aiohttp-apispec's entries, and ours."""


def declared_parts(handler: object) -> Declared:
    """The parts ``handler``'s requests must carry, read once per route by the envelope."""
    return tuple(getattr(handler, "__schemas__", None) or ())


def limits_of(config: Config) -> Limits:
    """What the deployment allows of keys, values and waits, for the schemas."""
    return Limits(
        key_max_bytes=config.elasticsearch.key_max_bytes,
        value_max_bytes=config.elasticsearch.value_max_bytes,
        max_wait_s=config.app.watch.max_wait_s,
        default_page_size=config.app.default_page_size,
    )


async def validate(request: web.Request, declared: Declared, limits: Limits) -> None:
    """Loads every declared part, for ``validated``; a ``ValidationError`` (400) otherwise. The
    envelope runs it after the caller was authorised."""
    with LIMITS(limits):
        request[_VALIDATED] = {
            entry["location"]: await _loaded(request, entry) for entry in declared
        }


_WHOLE_LOADERS = {"key": _load_key, "value": _load_value, "body": _load_body}


async def _loaded(request: web.Request, entry: dict[str, Any]) -> Any:
    field: fields.Field[Any] | None = entry.get("field")
    if field is not None:
        # One value, one field: loaded and checked directly, as webargs would (its errors
        # keyed by location and field), without a schema round per request.
        location = entry["location"]
        raw: Any = _WHOLE_LOADERS[location](request, entry["schema"])
        loaded = (await raw if inspect.isawaitable(raw) else raw)[location]
        try:
            return field.deserialize(loaded)
        except ValidationError as error:
            raise ValidationError({location: {location: error.messages}}) from None
    schema: Schema = entry["schema"]
    without_query = entry["location"] in ("querystring", "query") and not request.query_string
    if without_query and schema in _FROM_NO_QUERY:
        parsed = dict(_FROM_NO_QUERY[schema])
    else:
        parsed = await _parser.parse(
            schema, request, location=entry["location"], unknown=_unknown(entry)
        )
        if without_query:
            _FROM_NO_QUERY[schema] = dict(parsed)
    return parsed[entry["location"]] if entry.get("whole") else parsed


_FROM_NO_QUERY: "weakref.WeakKeyDictionary[Schema, dict[str, Any]]" = weakref.WeakKeyDictionary()
"""What each query schema loads from an empty query string (its defaults), as webargs loaded
it the first time: most requests (every plain get) have no query, and a webargs round costs
a get a tenth of its CPU."""


def _unknown(entry: dict[str, Any]) -> str | None:
    """Query parameters the handler does not know are ignored, as the original did (a
    monitor's cache-buster must not fail a health check); bodies keep their schema's rule."""
    return EXCLUDE if entry["location"] in ("querystring", "query") else None


def validated(request: web.Request, location: str) -> Any:
    """What the handler's schema for ``location`` (``querystring``, ``json``, ``key``, ...)
    loaded."""
    return request[_VALIDATED][location]
