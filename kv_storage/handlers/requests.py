"""Reading what a storage request carries: the key in its path and its body.

Called by handlers only once the caller is authorised (``handlers.access``). Invalid input
ends here with a 400 (or 413 for a body over its bound), before any actor is asked.
"""

from typing import TypeVar
from urllib.parse import unquote_to_bytes

from aiohttp import web
from marshmallow import ValidationError, fields

from kv_storage.app_keys import CONFIG
from kv_storage.clock import now_ms
from kv_storage.errors import BadRequestError
from kv_storage.middlewares import describe_validation_error
from kv_storage.validation import read_body, read_json

T = TypeVar("T")

EMPTY_OK_TYPES = ["application/json", "text/plain"]
"""What an endpoint that answers success with an empty body produces (errors are JSON)."""


def empty_ok() -> web.Response:
    """The original's empty 200, with a content type that says there is nothing to parse."""
    return web.Response(content_type="text/plain")


def received_ms() -> int:
    """The request's arrival in epoch milliseconds, as history records it."""
    return now_ms()


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


async def text_body(request: web.Request) -> str:
    """A single value: at most ``server.max-body-size`` bytes of UTF-8."""
    raw = await read_body(request, request.app[CONFIG].server.max_body_size)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("the body is not valid UTF-8") from None


async def json_body(request: web.Request, field: fields.Field[T], shape: str) -> T:
    """The body of a multi-key call as ``field`` loads it; ``shape`` says what it must be.

    At most ``server.max-keys-per-request`` keys: counted before any key is looked at.
    """
    document = await read_json(request)
    limit = request.app[CONFIG].server.max_keys_per_request
    if isinstance(document, list | dict) and len(document) > limit:
        raise BadRequestError(
            f"the body has {len(document)} keys; at most {limit} are allowed in one request "
            "(server.max-keys-per-request)"
        )
    try:
        loaded: T = field.deserialize(document)
    except ValidationError as error:
        detail = describe_validation_error(error)
        raise BadRequestError(f"the body must be {shape} ({detail})") from None
    return loaded


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
