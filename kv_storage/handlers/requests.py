"""Reading what every storage request carries: the storage id, the key, the secret, the body.

Invalid input ends here with a 400 (or 401 for a missing secret), before any actor is asked.
"""

import json
import time
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web
from marshmallow import ValidationError, fields

from kv_storage.errors import BadRequestError, UnauthorizedError
from kv_storage.middlewares import describe_validation_error

SECRET_KEY_HEADER = "Secret-Key"


EMPTY_OK_TYPES = ["application/json", "text/plain"]
"""What an endpoint that answers success with an empty body produces (errors are JSON)."""


def empty_ok() -> web.Response:
    """The original's empty 200, with a content type that says there is nothing to parse."""
    return web.Response(content_type="text/plain")


def received_ms() -> int:
    """The request's arrival in epoch milliseconds, as history records it."""
    return time.time_ns() // 1_000_000


def secret_key(request: web.Request) -> str:
    secret = request.headers.get(SECRET_KEY_HEADER)
    if secret is None:
        raise UnauthorizedError(f"the {SECRET_KEY_HEADER} header is missing")
    return secret


def storage_id(request: web.Request) -> str:
    return request.match_info["storage_id"]


def path_key(request: web.Request) -> str:
    """The key as the client percent-encoded it, decoded strictly as UTF-8.

    aiohttp's own decoding keeps invalid sequences such as ``%FF`` as they are; a key that is
    not UTF-8 must be refused instead. The raw path is ``/<operation>/<id>/<key>``, taken from
    the URL (a request target in absolute form, ``PUT http://host/set/...``, has it too).
    """
    raw = request.rel_url.raw_path.split("/", 3)[3]
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("the key is not valid UTF-8") from None


def require_content_type(request: web.Request, expected: str) -> None:
    if request.content_type != expected:
        given = request.headers.get("Content-Type", "none")
        raise BadRequestError(f"the content type must be {expected}, not {given}")


async def text_body(request: web.Request) -> str:
    try:
        return (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("the body is not valid UTF-8") from None


async def json_document(request: web.Request) -> Any:
    """The body as JSON, from a request that says it is JSON."""
    require_content_type(request, "application/json")
    text = await text_body(request)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRequestError(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise BadRequestError("the body is JSON nested too deeply") from None


async def json_body(request: web.Request, field: fields.Field[Any], shape: str) -> Any:
    """The body as JSON, checked against ``field``; ``shape`` says what it must be."""
    document = await json_document(request)
    try:
        return field.deserialize(document)
    except ValidationError as error:
        detail = describe_validation_error(error)
        raise BadRequestError(f"the body must be {shape} ({detail})") from None


def key_problem(key: str, max_bytes: int) -> str | None:
    """Why ``key`` cannot be a key, or ``None`` when it can."""
    size = utf8_size(key)
    if size is None:
        return "the key is not valid UTF-8"
    if size == 0:
        return "the key is empty"
    if size > max_bytes:
        return f"the key is {size} bytes of UTF-8; the limit is {max_bytes}"
    return None


def value_problem(value: str, max_bytes: int | None) -> str | None:
    """Why ``value`` cannot be stored, or ``None`` when it can (``max_bytes`` None: no limit)."""
    size = utf8_size(value)
    if size is None:
        return "the value is not valid UTF-8"
    if max_bytes is not None and size > max_bytes:
        return f"the value is {size} bytes of UTF-8; the limit is {max_bytes}"
    return None


def utf8_size(text: str) -> int | None:
    """Bytes of UTF-8, or ``None`` for text that has no UTF-8 form (lone surrogates)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None
