"""The one way requests are validated: each handler declares its requests' parts, and the
envelope (``kv_storage.envelope``) has them checked here, in two steps, before the handler
runs; the handler reads the results with ``validated(request, name)``. A failure is 400 (a
marshmallow ``ValidationError``; for the content type, a ``BadRequestError``).

1. Before the storage is looked up (after only the ``Secret-Key`` header's presence, in
   ``kv_storage.handlers.access``): the content type the route declares with
   ``docs(consumes=[...])``, its one declaration, which the API document shows. Headers
   only: no byte of the body is read before the caller is authorised.
2. Once the caller was authorised: every other part, in the order declared.

The parts are declared with aiohttp-apispec's own decorators wherever its API can say them,
which also document them: ``querystring_schema`` (``querystring``), ``headers_schema``
(``headers``: the conditions, ``kv_storage.handlers.conditions``) and ``request_schema``
(``json``). Their ``__schemas__`` entries are read as the library's ``validation_middleware``
reads them (``schema``, ``location``, and ``put_into``: the result's name), and each part is
loaded as webargs loads it, with what can be worked out once per route worked out once
(``route_validation``: the envelope keeps it in its ``RoutePlan``).

What the library cannot express is declared with ``validates``, the one shim: its
``request_schema`` takes only webargs' locations, and marshmallow schemas describe objects of
named fields, while the original's API has ``key`` (the key in the path as the client
percent-encoded it, decoded strictly as UTF-8: aiohttp's ``match_info`` keeps ``%FF`` as it
is), ``value`` (a single set's body, as text) and ``body`` (a bare JSON array or object).
Each is one marshmallow field, loaded directly, and its errors name no field (``the key is
empty``); the API document describes these parts by hand (``kv_storage.handlers.spec``).

The schemas live in ``schemas/``; what the deployment configures (the largest key and value)
reaches them through marshmallow's context (``schemas.storage.LIMITS``).

Bodies are read only here and only after the caller was authorised (the envelope checks that
first), and never beyond a bound: a JSON body over ``server.max-json-body-size`` is refused
with 413 as soon as its size is known, before it is parsed, so that nobody can make the
service parse many megabytes of JSON.
"""

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
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


def _require_content_type(request: web.Request, expected: str) -> None:
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
    ``server.max-body-size``, the bound of every body). Its content type was checked before
    the caller was authorised (``RouteValidation.check_content_type``)."""
    server = request.app[CONFIG].server
    limit = min(server.max_json_body_size, server.max_body_size)
    return parse_json(await read_body(request, limit, what="JSON body"))


class _BoundedParser(AIOHTTPParser):
    """webargs' parser, reading JSON bodies through ``read_json`` (bounded, and with the
    same answers to bad JSON as every other route)."""

    async def load_json(self, req: web.Request, schema: Schema) -> Any:
        if not req.body_exists:
            return core.missing
        return await read_json(req)


_parser = _BoundedParser()


def _load_key(request: web.Request) -> object:
    """The key as the client percent-encoded it in ``/<operation>/<id>/<key>``, decoded
    strictly: aiohttp keeps invalid sequences such as ``%FF`` as they are. Taken from the URL,
    so a request target in absolute form (``PUT http://host/set/...``) names the same key."""
    raw = request.rel_url.raw_path.split("/", 3)[3]
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8


async def _load_value(request: web.Request) -> object:
    """A single value: the body as text, at most ``server.max-body-size`` bytes."""
    raw = await read_body(request, request.app[CONFIG].server.max_body_size)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8


async def _load_body(request: web.Request) -> object:
    """A bare JSON array or object of keys, at most ``server.max-keys-per-request`` of them,
    counted before any key is looked at."""
    document = await read_json(request)
    limit = request.app[CONFIG].server.max_keys_per_request
    if isinstance(document, list | dict) and len(document) > limit:
        raise BadRequestError(
            f"the body has {len(document)} keys; at most {limit} are allowed in one request "
            "(server.max-keys-per-request)"
        )
    return document


HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


def validates(location: str, field: "fields.Field[Any]") -> Callable[[HandlerT], HandlerT]:
    """Declares that ``location`` (``key``, ``value`` or ``body``) of a handler's requests is
    loaded by ``field``; the handler finds the result with ``validated(request, location)``.

    The shim of the module's docstring: an entry of aiohttp-apispec's ``__schemas__``, as its
    decorators write them (with ``__apispec__`` beside it, which they expect together), plus
    the field that loads the whole part."""
    schema = Schema.from_dict({location: field}, name=f"{location.title()}Schema")()

    def declare(handler: HandlerT) -> HandlerT:
        marked: Any = handler
        if not hasattr(marked, "__apispec__"):
            marked.__apispec__ = {"schemas": [], "responses": {}, "parameters": []}
            marked.__schemas__ = []
        marked.__schemas__.append(
            {"schema": schema, "location": location, "put_into": location, "field": field}
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


class _Part:
    """One declared part of a route's requests, loaded under ``name``."""

    __slots__ = ("location", "name", "schema")

    def __init__(self, entry: dict[str, Any]) -> None:
        self.schema: Schema = entry["schema"]
        self.location: str = entry["location"]
        self.name: str = entry.get("put_into") or self.location

    async def load(self, request: web.Request) -> Any:
        """As aiohttp-apispec's ``validation_middleware`` loads it: a webargs round."""
        return await _parser.parse(self.schema, request, location=self.location)


class _Whole(_Part):
    """A ``validates`` part: one value, one field, loaded and checked directly, as webargs
    would (its errors keyed by location and field), without a schema round per request."""

    __slots__ = ("field",)

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(entry)
        self.field: fields.Field[Any] = entry["field"]

    async def load(self, request: web.Request) -> Any:
        location = self.location
        if location == "key":
            raw = _load_key(request)
        else:
            raw = await (_load_value if location == "value" else _load_body)(request)
        try:
            return self.field.deserialize(raw)
        except ValidationError as error:
            raise ValidationError({location: {location: error.messages}}) from None


class _Query(_Part):
    """A query string. Most requests (every plain get) have none, and a webargs round costs a
    get a tenth of its CPU: what the schema loads from no query (its defaults, which may be
    configured) is kept from the first such request. Parameters the handler does not know
    are ignored, as the original did (a monitor's cache-buster must not fail a check)."""

    __slots__ = ("_from_none",)

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(entry)
        self._from_none: dict[str, Any] | None = None

    async def load(self, request: web.Request) -> Any:
        if request.query_string:
            return await _parser.parse(
                self.schema, request, location=self.location, unknown=EXCLUDE
            )
        if self._from_none is None:
            self._from_none = await _parser.parse(self.schema, request, location=self.location)
        return dict(self._from_none)


class _Headers(_Part):
    """Headers, loaded from those the schema names: most requests carry none of them (an
    unconditional get or set), and then what the schema loads from none is kept from the
    first; otherwise one ``load`` of the named headers (a webargs round would wrap every
    header of the request first). Their first line each, as webargs takes them."""

    __slots__ = ("_from_none", "_names")

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(entry)
        self._names = tuple(
            field.data_key or name for name, field in self.schema.load_fields.items()
        )
        self._from_none: tuple[Any] | None = None

    async def load(self, request: web.Request) -> Any:
        headers = request.headers
        given = {name: value for name in self._names if (value := headers.get(name)) is not None}
        if given:
            return self._loaded(given)
        if self._from_none is None:
            self._from_none = (self._loaded({}),)
        return self._from_none[0]

    def _loaded(self, headers: dict[str, str]) -> Any:
        try:
            return self.schema.load(headers)
        except ValidationError as error:
            raise ValidationError({self.location: error.messages}) from None


def _part(entry: dict[str, Any]) -> _Part:
    if "field" in entry:
        return _Whole(entry)
    if entry["location"] in ("querystring", "query"):
        return _Query(entry)
    if entry["location"] == "headers":
        return _Headers(entry)
    return _Part(entry)


@dataclass(frozen=True, slots=True)
class RouteValidation:
    """What one route's requests must be, worked out once (the envelope's ``RoutePlan``
    keeps it). The handler's cached results are per route and application, as the defaults
    they hold may come from the application's configuration."""

    content_type: str | None
    """The media type of the route's bodies (``docs(consumes=[...])``)."""
    content_type_always: bool
    """Whether a request without a body must carry it too: the original's storage routes
    refused a missing content type, body or none; elsewhere only a body has a type."""
    parts: tuple[_Part, ...]

    def check_content_type(self, request: web.Request) -> None:
        """The first step: headers only, before the storage is looked up."""
        if self.content_type is not None and (self.content_type_always or request.body_exists):
            _require_content_type(request, self.content_type)

    async def load(self, request: web.Request, limits: Limits) -> None:
        """The second step, once the caller was authorised: every declared part, for
        ``validated``; a ``ValidationError`` (400) otherwise."""
        with LIMITS(limits):
            request[_VALIDATED] = {part.name: await part.load(request) for part in self.parts}


def route_validation(handler: object, *, storage_route: bool) -> RouteValidation | None:
    """What ``handler``'s requests must be, or ``None`` when it declared nothing."""
    consumes = getattr(handler, "__apispec__", {}).get("consumes") or ()
    if len(consumes) > 1:
        raise ValueError(f"{handler!r} declares {consumes}: a route takes one content type")
    parts = tuple(_part(entry) for entry in getattr(handler, "__schemas__", None) or ())
    if not consumes and not parts:
        return None
    return RouteValidation(consumes[0] if consumes else None, storage_route, parts)


def limits_of(config: Config) -> Limits:
    """What the deployment allows of keys, values and waits, for the schemas."""
    return Limits(
        key_max_bytes=config.elasticsearch.key_max_bytes,
        value_max_bytes=config.elasticsearch.value_max_bytes,
        max_wait_s=config.app.watch.max_wait_s,
        default_page_size=config.app.default_page_size,
    )


def validated(request: web.Request, name: str) -> Any:
    """What the handler's declaration of ``name`` (``querystring``, ``headers``, ``json``,
    ``key``, ...) loaded."""
    return request[_VALIDATED][name]
