"""Who may call a storage route, decided in one place and in the original service's order.

For every route marked with ``storage_route`` (the envelope, ``kv_storage.envelope``, runs
the checks), before any parameter is parsed or any byte of the body is read:

1. a missing ``Secret-Key`` header is 401 (``required_secret``);
2. a body of the wrong content type is 400 (the first step of the request validation,
   ``kv_storage.validation``, on the route's declared content type);
3. an id no storage can have is 400; an unknown, deleted or expired storage is 404;
4. a ``Secret-Key`` that is not the storage's is 401 (``authorise_request``: 3 and 4).

Only then do the schemas look at keys, values, conditions and query parameters (400). So a
caller without the secret learns nothing but 401 or 404, and cannot make the service read,
let alone parse, a body: an unauthorised request costs one cached lookup.
"""

from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from kv_storage.actors.access import authorise
from kv_storage.actors.cache import CacheActor, Forget
from kv_storage.actors.storage import StorageClosedError
from kv_storage.app_keys import SERVICE
from kv_storage.errors import NotFoundError, UnauthorizedError
from kv_storage.model import Storage

SECRET_KEY_HEADER = "Secret-Key"

HandlerT = TypeVar("HandlerT", bound=Callable[..., object])

_AUTHORISED = web.RequestKey("authorised_storage", Storage)


def storage_route(handler: HandlerT) -> HandlerT:
    """Marks a handler of ``/<operation>/{storage_id}...``: it runs only for the storage's
    holder, and finds the storage with ``authorised_storage``."""
    handler.__storage_route__ = True  # type: ignore[attr-defined]
    return handler


def is_storage_route(handler: object) -> bool:
    return getattr(handler, "__storage_route__", False)


def required_secret(request: web.Request) -> str:
    """The ``Secret-Key`` header, which a storage route's request must carry (1. above)."""
    secret = request.headers.get(SECRET_KEY_HEADER)
    if secret is None:
        raise UnauthorizedError(f"the {SECRET_KEY_HEADER} header is missing")
    return secret


async def authorise_request(request: web.Request, secret: str) -> None:
    """3. and 4. above, for a request of a ``storage_route`` that carries ``secret``."""
    request[_AUTHORISED] = await authorise(
        request.app[SERVICE].cache, request.match_info["storage_id"], secret
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
