"""The key/value endpoints of the original service: get, set, delete (single and multi),
list and clear. Paths, content types, bodies and status codes are the original's."""

import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import replace

from aiohttp import hdrs, web
from aiohttp_apispec import headers_schema, querystring_schema

from kv_storage.actors.key_listing import ListKeyPage
from kv_storage.actors.storage import (
    Clear,
    DeleteValue,
    DeleteValues,
    GetValues,
    KeyScan,
    ListKeys,
    SetValue,
    SetValues,
)
from kv_storage.app_keys import CONFIG, SERVICE
from kv_storage.es.keys import KeyRange
from kv_storage.handlers.access import authorised_storage, storage_route
from kv_storage.handlers.conditions import DeleteCondition, KnownVersion, WriteCondition
from kv_storage.handlers.requests import EMPTY_OK_TYPES, empty_ok, json_answer, received_ms
from kv_storage.handlers.spec import (
    ETAG_HEADER,
    INVALID_KEYS_BODY,
    KEY_NOTE,
    KEY_PARAMETER,
    PRECONDITION_FAILED,
    TOO_LARGE,
    body_parameter,
    raw_response,
    storage_operation,
)
from kv_storage.handlers.watching import get_answer
from kv_storage.middlewares import extend_deadline, start_streaming
from kv_storage.model import Condition, Storage, Version
from kv_storage.validation import validated, validates
from schemas.storage import (
    KEY,
    KEY_LIST_SPEC,
    KEYS,
    KEYS_SPEC,
    PAIRS,
    PAIRS_SPEC,
    RESULTS_SPEC,
    VALUE,
    VALUES_SPEC,
    GetQuerySchema,
    KeyListQuerySchema,
    KeySelection,
)

_TAGS = ["storage operations"]
_BUSY = (
    503,
    "elasticsearch.scroll.max-open lists and clears are in progress on this instance; "
    "try again after Retry-After seconds",
)


@storage_operation(
    _TAGS,
    "Get the value of a key",
    description=(
        "Answers the value as text/plain, with its version as an `ETag`. With "
        "`If-None-Match: <etag>`, an unchanged key is 304; with `wait` as well, the answer "
        "waits (up to `wait`, at most app.watch.max-wait) for the key to change: 200 with the "
        "new value and tag, 404 if it was deleted, 304 when the wait passed." + KEY_NOTE
    ),
    produces=["text/plain", "application/json"],
    parameters=[KEY_PARAMETER],
    answers={
        200: {
            **raw_response("The value", {"type": "string", "example": "somevalue"}),
            "headers": ETAG_HEADER,
        },
        304: {
            "description": "If-None-Match names the current version (after `wait`, if given)",
            "headers": ETAG_HEADER,
        },
    },
    errors=[
        (400, "The key, the wait or the If-None-Match tag is invalid"),
        (404, "The storage does not exist or has no such key"),
        (503, "app.watch.max-waiters blocking reads wait already; try again later"),
    ],
)
@headers_schema(KnownVersion)
@querystring_schema(GetQuerySchema)
@storage_route
@validates("key", KEY)
async def get_value(request: web.Request) -> web.Response:
    wait_s: float | None = validated(request, "querystring").get("wait")
    known: Version | None = validated(request, "headers")
    storage, key = authorised_storage(request), validated(request, "key")
    return await get_answer(request, storage, key, known, wait_s)


@storage_operation(
    _TAGS,
    "Get the values of several keys",
    consumes=["application/json"],
    parameters=[body_parameter("keys", KEYS_SPEC)],
    answers={200: raw_response("Each key's value, null for missing keys", VALUES_SPEC)},
    errors=[INVALID_KEYS_BODY, TOO_LARGE],
)
@storage_route
@validates("body", KEYS)
async def get_values(request: web.Request) -> web.Response:
    keys: KeySelection = validated(request, "body")
    command = GetValues(authorised_storage(request), keys.valid)
    values = await request.app[SERVICE].storage.ask(command)
    return json_answer({key: values.get(key) for key in keys.keys})


@storage_operation(
    _TAGS,
    "Set the value of a key",
    produces=EMPTY_OK_TYPES,
    description="The body is the value, sent as text/plain." + KEY_NOTE,
    consumes=["text/plain"],
    parameters=[KEY_PARAMETER, body_parameter("value", {"type": "string", "example": "somevalue"})],
    answers={
        200: {"description": "The value is stored; ETag: its new version", "headers": ETAG_HEADER}
    },
    errors=[
        (400, "The content type, key, value or a condition header is invalid"),
        PRECONDITION_FAILED,
        TOO_LARGE,
    ],
)
@headers_schema(WriteCondition)
@storage_route
@validates("key", KEY)
@validates("value", VALUE)
async def set_value(request: web.Request) -> web.Response:
    arrival = received_ms()
    key, value = validated(request, "key"), validated(request, "value")
    condition: Condition | None = validated(request, "headers")
    command = SetValue(authorised_storage(request), key, value, arrival, condition)
    version = await request.app[SERVICE].storage.ask(command)
    answer = empty_ok()
    if version is not None:
        answer.headers["ETag"] = version.etag
    return answer


@storage_operation(
    _TAGS,
    "Set the values of several keys",
    description=(
        "Pairs with an invalid key or value are answered `false` and not written; the others "
        "are written in one bulk request."
    ),
    consumes=["application/json"],
    parameters=[body_parameter("pairs", PAIRS_SPEC)],
    answers={200: raw_response("Per key, whether it was written", RESULTS_SPEC)},
    errors=[INVALID_KEYS_BODY, TOO_LARGE],
)
@storage_route
@validates("body", PAIRS)
async def set_values(request: web.Request) -> web.Response:
    arrival = received_ms()
    pairs: dict[str, str | None] = validated(request, "body")
    valid = {key: value for key, value in pairs.items() if value is not None}
    command = SetValues(authorised_storage(request), valid, arrival)
    written = await request.app[SERVICE].storage.ask(command)
    return json_answer({key: key in written for key in pairs})


@storage_operation(
    _TAGS,
    "Delete a key",
    produces=EMPTY_OK_TYPES,
    description=(
        "Deleting a key that does not exist succeeds too (not with If-Match: then 412)." + KEY_NOTE
    ),
    parameters=[KEY_PARAMETER],
    answers={200: {"description": "The key is gone"}},
    errors=[(400, "The key or the If-Match tag is invalid"), PRECONDITION_FAILED],
)
@headers_schema(DeleteCondition)
@storage_route
@validates("key", KEY)
async def delete_value(request: web.Request) -> web.Response:
    arrival = received_ms()
    storage, key = authorised_storage(request), validated(request, "key")
    condition: Condition | None = validated(request, "headers")
    command = DeleteValue(storage, key, arrival, condition)
    await request.app[SERVICE].storage.ask(command)
    return empty_ok()


@storage_operation(
    _TAGS,
    "Delete several keys",
    description="Keys that do not exist are answered `true`: deletion is idempotent.",
    consumes=["application/json"],
    parameters=[body_parameter("keys", KEYS_SPEC)],
    answers={200: raw_response("Per key, whether it is gone", RESULTS_SPEC)},
    errors=[INVALID_KEYS_BODY, TOO_LARGE],
)
@storage_route
@validates("body", KEYS)
async def delete_values(request: web.Request) -> web.Response:
    arrival = received_ms()
    keys: KeySelection = validated(request, "body")
    command = DeleteValues(authorised_storage(request), keys.valid, arrival)
    deleted = await request.app[SERVICE].storage.ask(command)
    return json_answer({key: key in deleted for key in keys.keys})


@storage_operation(
    _TAGS,
    "List the keys of a storage: every one, or by prefix in pages",
    description=(
        "Without parameters, streams every key as a JSON array, however many there are, as "
        "the original did; it sees every write acknowledged before it began. With `prefix`, "
        "`after` or `limit`: the keys that start with `prefix`, strictly after `after`, in "
        "the byte order of their UTF-8, at most `limit`; when more follow, the `Link` header "
        'names the next page (`rel="next"`). Each page is one search; pages see writes '
        "within a second (Elasticsearch's refresh)."
    ),
    answers={
        200: {
            **raw_response("The keys", KEY_LIST_SPEC),
            "headers": {
                "Link": {
                    "type": "string",
                    "description": 'With `limit`, when more keys follow: `<next page>; rel="next"`',
                }
            },
        },
    },
    errors=[(400, "A parameter is invalid"), _BUSY],
)
@querystring_schema(KeyListQuerySchema)
@storage_route
async def list_keys(request: web.Request) -> web.StreamResponse:
    query = validated(request, "querystring")
    storage = authorised_storage(request)
    if not query:  # every key, as the original answered
        scan: KeyScan = await request.app[SERVICE].storage.ask(ListKeys(storage))
        try:
            return await _stream_keys(request, scan)
        finally:
            await scan.close()
    where = KeyRange(prefix=query.get("prefix", ""), after=query.get("after"))
    limit: int | None = query.get("limit")
    if limit is None:
        return await _stream_keys(request, _every_page(request, storage, where))
    page = await request.app[SERVICE].key_listing.ask(ListKeyPage(storage, where, limit))
    answer = json_answer(page.keys)
    if page.more:
        following = request.rel_url.update_query(after=page.keys[-1])
        answer.headers["Link"] = f'<{following}>; rel="next"'
    return answer


async def _every_page(
    request: web.Request, storage: Storage, where: KeyRange
) -> AsyncIterator[list[str]]:
    """Every key of ``where``, a page (``elasticsearch.scroll.page-size``) at a time."""
    size = request.app[CONFIG].elasticsearch.scroll.page_size
    while True:
        page = await request.app[SERVICE].key_listing.ask(ListKeyPage(storage, where, size))
        if page.keys:
            yield page.keys
        if not page.more:
            return
        where = replace(where, after=page.keys[-1])


async def _stream_keys(request: web.Request, scan: AsyncIterable[list[str]]) -> web.StreamResponse:
    timeout_s = request.app[CONFIG].app.request_timeout_s
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    if request.method == hdrs.METH_HEAD:  # the GET's status and headers; no keys to send
        return response  # (the caller closes the scan, releasing its scroll)
    await start_streaming(request, response)
    separator = b"["
    async for page in scan:
        extend_deadline(request, timeout_s)
        keys = ",".join(json.dumps(key, ensure_ascii=False) for key in page)
        await response.write(separator + keys.encode())
        separator = b","
    await response.write(b"]" if separator == b"," else b"[]")
    await response.write_eof()
    return response


@storage_operation(
    _TAGS,
    "Delete every key of a storage",
    produces=EMPTY_OK_TYPES,
    description=(
        "Deletes each key unless it changed after the clear read it; such keys are kept and "
        "the answer is 409."
    ),
    answers={200: {"description": "The storage is empty"}},
    errors=[(409, "Keys changed during the clear; the storage may be cleared partially"), _BUSY],
)
@storage_route
async def clear(request: web.Request) -> web.Response:
    arrival = received_ms()
    await request.app[SERVICE].storage.ask(Clear(authorised_storage(request), arrival))
    return empty_ok()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/get/{storage_id}/{key:.*}", get_value, allow_head=False)
    app.router.add_post("/get/{storage_id}", get_values)
    app.router.add_put("/set/{storage_id}/{key:.*}", set_value)
    app.router.add_put("/set/{storage_id}", set_values)
    app.router.add_delete("/delete/{storage_id}/{key:.*}", delete_value)
    app.router.add_post("/delete/{storage_id}", delete_values)
    app.router.add_get("/list/{storage_id}", list_keys, allow_head=False)
    app.router.add_post("/clear/{storage_id}", clear)
