"""The history endpoints of the original service: search with paging or scrolling, and the
continuation of a scroll."""

from aiohttp import web
from aiohttp_apispec import docs, querystring_schema, request_schema

from kv_storage.actors.history_query import ContinueHistory, HistoryAnswer, SearchHistory
from kv_storage.app_keys import CONFIG, SERVICE
from kv_storage.handlers.access import authorised_storage, storage_route
from kv_storage.handlers.spec import (
    SECRET_KEY_ERRORS,
    SECRET_KEY_PARAMETER,
    error_answers,
    storage_id_parameter,
)
from kv_storage.model import HistoryQuery
from kv_storage.validation import validated
from schemas.history import (
    HistoryPageSchema,
    HistoryQuerySchema,
    HistoryScrollSchema,
    HistorySearchAnswerSchema,
    ScrollRequestSchema,
)

_TAGS = ["storage history"]
_page_schema = HistoryPageSchema()
_scroll_schema = HistoryScrollSchema()


@docs(
    tags=_TAGS,
    summary="Search a storage's history",
    description=(
        "Records of every set, delete and clear on a storage that keeps history, filtered, "
        "sorted and returned a page at a time, or as the first batch of a scroll when `scroll` "
        "is given (then `page` is ignored). Paging reaches the first 10000 records "
        "(`page` x `size` at most 10000); scroll for more."
    ),
    parameters=[SECRET_KEY_PARAMETER, storage_id_parameter()],
    responses={
        200: {
            "description": "A page (with `page`, without `scrollId`), or with `scroll` the "
            "first batch of a scroll (with `scrollId`, without `page`)",
            "schema": HistorySearchAnswerSchema,
        },
        **error_answers(
            SECRET_KEY_ERRORS,
            (
                400,
                "Invalid parameters (named in the message; a page beyond the first 10000 "
                "records names `page`), or the storage keeps no history (TEMP, or disabled)",
            ),
        ),
    },
)
@querystring_schema(HistoryQuerySchema)
@storage_route
async def search_history(request: web.Request) -> web.Response:
    params = validated(request, "querystring")
    query = HistoryQuery(
        keys=tuple(params.get("keys", ())),
        operations=tuple(params.get("operations", ())),
        start_ms=params.get("start"),
        end_ms=params.get("end"),
        sort=tuple(
            dict.fromkeys((s.removeprefix("-"), s.startswith("-")) for s in params.get("sort", ()))
        ),
    )
    size = params.get("size", request.app[CONFIG].app.default_page_size)
    command = SearchHistory(
        authorised_storage(request), query, params["page"], size, params.get("scroll")
    )
    answer: HistoryAnswer = await request.app[SERVICE].history_query.ask(command)
    return _render(answer)


@docs(
    tags=_TAGS,
    summary="Continue a history scroll",
    description=(
        "The next batch of a scroll opened by `GET /history/{storage_id}?scroll=...`. No "
        "Secret-Key: the scroll id, signed by the service and bound to its storage and that "
        "storage's secret, is the capability; it lives `scroll` (then `timeout`) ms. A scroll "
        "holds nothing in Elasticsearch between batches. The last batch's scroll id answers "
        "batches with no items (the loop of a "
        "client that asks until `items` is empty ends)."
    ),
    consumes=["application/json"],
    responses={
        200: {
            "description": "The next batch (no items after the last)",
            "schema": HistoryScrollSchema,
        },
        **error_answers(
            None,
            (
                400,
                "Invalid body (`timeout` at most 24 h); the scroll id is unknown, altered or "
                "expired; or its storage was deleted, stopped keeping history or got a new "
                "secret",
            ),
        ),
    },
)
@request_schema(ScrollRequestSchema, required=True)
async def continue_history(request: web.Request) -> web.Response:
    body = validated(request, "json")
    command = ContinueHistory(body["scrollId"], body["timeout"])
    return _render(await request.app[SERVICE].history_query.ask(command))


def _render(answer: HistoryAnswer) -> web.Response:
    shape = {"total": answer.total, "size": len(answer.items), "items": answer.items}
    if answer.scroll_id is not None:
        return web.json_response(_scroll_schema.dump({**shape, "scrollId": answer.scroll_id}))
    return web.json_response(_page_schema.dump({**shape, "page": answer.page}))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/history/{storage_id}", search_history, allow_head=False)
    app.router.add_post("/history", continue_history)
