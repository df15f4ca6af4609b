"""Who may call a storage route, decided in one place and in the original service's order.

For every route marked with ``storage_route`` (the envelope, ``kv_storage.envelope``, runs
the checks), before any parameter is parsed or any byte of the body is read:

1. a missing ``Secret-Key`` header is 401;
2. a body of the wrong content type is 400;
3. an id no storage can have is 400; an unknown, deleted or expired storage is 404;
4. a ``Secret-Key`` that is not the storage's is 401.

Only then do the schemas look at keys, values and query parameters (400). So a caller without
the secret learns nothing but 401 or 404, and cannot make the service read, let alone parse,
a body: an unauthorised request costs one cached lookup.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from kv_storage.actors.access import authorise
from kv_storage.actors.cache import CacheActor, Forget
from kv_storage.actors.storage import StorageClosedError
from kv_storage.app_keys import PARTS
from kv_storage.errors import NotFoundError, UnauthorizedError
from kv_storage.model import Storage
from kv_storage.validation import require_content_type

SECRET_KEY_HEADER = "Secret-Key"

HandlerT = TypeVar("HandlerT", bound=Callable[..., object])

_AUTHORISED = web.RequestKey("authorised_storage", Storage)


@dataclass(frozen=True, slots=True)
class StorageRoute:
    content_type: str | None
    """The media type the body must have; ``None`` for routes without a body."""


def storage_route(*, content_type: str | None = None) -> Callable[[HandlerT], HandlerT]:
    """Marks a handler of ``/<operation>/{storage_id}...``: it runs only for the storage's
    holder, and finds the storage with ``authorised_storage``."""

    def mark(handler: HandlerT) -> HandlerT:
        handler.__storage_route__ = StorageRoute(content_type)  # type: ignore[attr-defined]
        return handler

    return mark


async def authorise_request(request: web.Request, route: StorageRoute) -> None:
    """The checks above, in their order, for a request of a ``storage_route``."""
    secret = request.headers.get(SECRET_KEY_HEADER)
    if secret is None:
        raise UnauthorizedError(f"the {SECRET_KEY_HEADER} header is missing")
    if route.content_type is not None:
        require_content_type(request, route.content_type)
    request[_AUTHORISED] = await authorise(
        request.app[PARTS].cache, request.match_info["storage_id"], secret
    )


async def closed_answer(cache: CacheActor, closed: StorageClosedError) -> Exception:
    """A write met the storage's index closed to writes: 404 if the registry, asked again,
    says the storage is gone (deleted through another instance a moment ago); else the
    refusal (500), for an operator who closed the index."""
    await cache.ask(Forget((closed.storage_id,)))
    if await cache.look_up(closed.storage_id) is None:
        return NotFoundError(f"storage {closed.storage_id} does not exist (it was deleted)")
    return closed.cause


def authorised_storage(request: web.Request) -> Storage:
    """The storage of a ``storage_route`` request, whose holder the caller proved to be."""
    return request[_AUTHORISED]
