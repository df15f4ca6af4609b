"""A get that answers with the key's version (``ETag``), and waits for it to change when asked.

``If-None-Match: <etag>`` makes the get conditional: unchanged, it is 304 with the same tag.
With ``?wait=<duration>`` as well, an unchanged key is waited for, up to the duration: the
answer comes as soon as the version differs (200 with the value and its new tag, or 404 if
the key is gone), or when the wait passes (304). Such a request is exempt from
``app.request-timeout`` for its wait. The storage (its existence, expiry and the Secret-Key)
is checked again before the answer: a storage deleted meanwhile answers 404.
"""

import asyncio

from aiohttp import web

from kv_storage.actors.access import authorise
from kv_storage.actors.storage import GetValue
from kv_storage.actors.watch import SHUTDOWN, Unwatch, Watch
from kv_storage.app_keys import CONFIG, METRICS, SERVICE
from kv_storage.errors import NotFoundError
from kv_storage.es.batches import Found
from kv_storage.handlers.access import SECRET_KEY_HEADER
from kv_storage.middlewares import extend_deadline
from kv_storage.model import DocumentKey, Storage, Version

ETAG = "ETag"


async def get_answer(
    request: web.Request, storage: Storage, key: str, known: Version | None, wait_s: float | None
) -> web.Response:
    found = await _read(request, storage, key)
    if known is not None and wait_s is not None:
        found = await _until_changed(request, storage, key, known, found, wait_s)
    if found is None:
        raise NotFoundError(f"storage {storage.id} has no key {key!r}")
    headers = {ETAG: found.version.etag}
    if known is not None and found.version == known:
        return web.Response(status=304, headers=headers)
    return web.Response(text=found.value, content_type="text/plain", headers=headers)


async def _read(request: web.Request, storage: Storage, key: str) -> Found | None:
    try:
        return await request.app[SERVICE].storage.ask(GetValue(storage, key))
    except NotFoundError:
        return None


async def _until_changed(
    request: web.Request,
    storage: Storage,
    key: str,
    known: Version,
    found: Found | None,
    wait_s: float,
) -> Found | None:
    """``found`` once its version is not ``known`` any more, or at the end of the wait."""
    if found is None or found.version != known:
        return found
    app = request.app
    extend_deadline(request, wait_s + app[CONFIG].app.request_timeout_s)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    where = DocumentKey(storage.id, key, storage.layout)
    wakeups = app[METRICS].watch_wakeups
    while True:
        waiter = await app[SERVICE].watch.ask(Watch(where, known))
        try:
            # Read again after watching: a change between the first read and now is not lost.
            found = await _read(request, storage, key)
            if found is None or found.version != known:
                return found
            try:
                async with asyncio.timeout_at(deadline):
                    cause = await waiter.woken
            except TimeoutError:
                wakeups.labels("timeout").inc()
                await _still_authorised(request, storage)
                return found
        finally:
            app[SERVICE].watch.send(Unwatch(waiter))
        wakeups.labels(cause).inc()
        await _still_authorised(request, storage)
        if cause == SHUTDOWN:
            return found
        found = await _read(request, storage, key)
        if found is None or found.version != known:
            return found


async def _still_authorised(request: web.Request, storage: Storage) -> None:
    """The checks of the request's arrival, again: deleted, expired or re-keyed meanwhile,
    the storage answers 404 or 401."""
    await authorise(
        request.app[SERVICE].cache, storage.id, request.headers.get(SECRET_KEY_HEADER, "")
    )
