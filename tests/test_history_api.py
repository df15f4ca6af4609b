"""GET /history/<id> and POST /history against the real node: validation, filters, sorting,
paging, scrolling, and the 400/401/404 cases."""

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from elasticsearch import AsyncElasticsearch
from jsonschema import Draft4Validator  # type: ignore[import-untyped]

from kv_storage.app import create_app
from kv_storage.config import Config
from schemas.fields import MAX_KEEP_ALIVE_MS, MAX_LONG
from tests.conftest import BOTH_LAYOUTS, CountingProxy, StorageFactory, StorageRef
from tests.helpers import Client, placed, put
from tests.waiting import wait_until

pytestmark = BOTH_LAYOUTS

RECORDS: list[dict[str, Any]] = [
    {"key": "a", "value": "1", "operation": "set", "timestamp": 1000},
    {"key": "b", "value": "2", "operation": "set", "timestamp": 2000},
    {"key": "a", "value": None, "operation": "delete", "timestamp": 3000},
    {"key": "c", "value": "0", "operation": "set", "timestamp": 4000},
    {"key": None, "value": None, "operation": "clear", "timestamp": 5000},
]


@pytest.fixture
async def history(
    create_storage: StorageFactory, es: AsyncElasticsearch, index_prefix: str, storage_layout: str
) -> StorageRef:
    """A storage whose history was written straight into Elasticsearch: as the original
    wrote it into its own index, or into the shared one as the service does."""
    storage = await create_storage(history_enabled=True)
    where = placed(index_prefix, storage.id, storage_layout)
    for record in RECORDS:
        await es.index(**where.search_options(where.history_index), document=where.tagged(record))
    await es.indices.refresh(index=where.history_index)
    return storage


async def search(api: Client, storage: StorageRef, **params: Any) -> tuple[int, Any]:
    response = await api.get(
        f"/history/{storage.id}",
        params={k: str(v) for k, v in params.items()},
        headers=storage.headers,
    )
    return response.status, await response.json()


def triples(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(item["key"], item["operation"], item["timestamp"]) for item in items]


async def test_page_answer_shape(api: Client, history: StorageRef) -> None:
    status, body = await search(api, history)
    assert status == 200
    assert body == {
        "total": 5,
        "size": 5,
        "page": 1,
        "items": [
            {
                "key": r["key"],
                "value": r["value"],
                "operation": r["operation"],
                "timestamp": r["timestamp"],
            }
            for r in RECORDS
        ],
    }


async def test_paging(api: Client, history: StorageRef) -> None:
    status, body = await search(api, history, size=2, page=2)
    assert status == 200
    assert (body["total"], body["size"], body["page"]) == (5, 2, 2)
    assert [item["timestamp"] for item in body["items"]] == [3000, 4000]
    _, last = await search(api, history, size=2, page=3)
    assert [item["timestamp"] for item in last["items"]] == [5000]
    _, beyond = await search(api, history, size=2, page=9)
    assert (beyond["total"], beyond["size"], beyond["items"]) == (5, 0, [])


@pytest.mark.parametrize(
    ("params", "timestamps"),
    [
        ({"keys": "a"}, [1000, 3000]),
        ({"keys": "a,c"}, [1000, 3000, 4000]),
        ({"keys": "a,a"}, [1000, 3000]),
        ({"operations": "delete,clear"}, [3000, 5000]),
        ({"operations": "set,set"}, [1000, 2000, 4000]),
        ({"start": 2000}, [2000, 3000, 4000, 5000]),
        ({"end": 2000}, [1000, 2000]),
        ({"start": 2000, "end": 4000}, [2000, 3000, 4000]),
        ({"start": 3000, "end": 3000}, [3000]),
        ({"keys": "a", "operations": "set", "end": 3000}, [1000]),
        ({"keys": "zzz"}, []),
    ],
)
async def test_filters(
    api: Client, history: StorageRef, params: dict[str, Any], timestamps: list[int]
) -> None:
    status, body = await search(api, history, **params)
    assert status == 200
    assert [item["timestamp"] for item in body["items"]] == timestamps
    assert body["total"] == len(timestamps)


@pytest.mark.parametrize(
    ("sort", "timestamps"),
    [
        ("timestamp", [1000, 2000, 3000, 4000, 5000]),
        ("-timestamp", [5000, 4000, 3000, 2000, 1000]),
        ("key,timestamp", [1000, 3000, 2000, 4000, 5000]),
        ("-key,-timestamp", [4000, 2000, 3000, 1000, 5000]),  # a missing key sorts last
        ("operation,-timestamp", [5000, 3000, 4000, 2000, 1000]),
        ("-operation,timestamp", [1000, 2000, 4000, 3000, 5000]),
        ("value,timestamp", [4000, 1000, 2000, 3000, 5000]),
        ("-value,timestamp", [2000, 1000, 4000, 3000, 5000]),
        ("timestamp,timestamp", [1000, 2000, 3000, 4000, 5000]),
    ],
)
async def test_sorting_by_every_field(
    api: Client, history: StorageRef, sort: str, timestamps: list[int]
) -> None:
    status, body = await search(api, history, sort=sort)
    assert status == 200, body
    assert [item["timestamp"] for item in body["items"]] == timestamps


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"start": 0}, "start"),
        ({"start": -5}, "start"),
        ({"start": "yesterday"}, "start"),
        ({"end": "1.5"}, "end"),
        ({"start": 10, "end": 9}, "start"),
        ({"page": 0}, "page"),
        ({"page": "x"}, "page"),
        ({"size": 0}, "size"),
        ({"size": 10001}, "size"),
        ({"scroll": 0}, "scroll"),
        ({"scroll": "soon"}, "scroll"),
        ({"scroll": MAX_KEEP_ALIVE_MS + 1}, "scroll"),
        ({"scroll": MAX_LONG}, "scroll"),
        ({"operations": "set,update"}, "operations"),
        ({"sort": "color"}, "sort"),
        ({"sort": "key,-key"}, "sort"),
        ({"sort": "-timestamp,timestamp"}, "sort"),
    ],
)
async def test_invalid_parameters_are_400_naming_them(
    api: Client, history: StorageRef, params: dict[str, Any], parameter: str
) -> None:
    status, body = await search(api, history, **params)
    assert status == 400
    assert body["error"].startswith(f"{parameter}: "), body


@pytest.mark.parametrize(
    "params",
    [
        {"page": 1001, "size": 10},
        {"page": 2, "size": 10000},
        {"page": 201},  # of the default size, 50
        {"page": 10001},
        {"page": 2**62, "size": 10000},
        {"page": MAX_LONG, "size": 10000},  # (page - 1) * size overflows Elasticsearch's int
    ],
)
async def test_paging_beyond_the_window_is_400_naming_page_before_elasticsearch(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    es_proxy: CountingProxy,
    history: StorageRef,
    params: dict[str, Any],
) -> None:
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_ELASTICSEARCH_URI=es_proxy.url)))
    status, body = await search(api, history, **params)
    assert status == 400
    assert body["error"].startswith("page: "), body
    assert "use scroll" in body["error"]
    assert es_proxy.count(path_part="storage-history") == 0


async def test_the_window_of_a_page_without_size_is_that_of_the_configured_default(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    history: StorageRef,
) -> None:
    """app.default-page-size is the size of a page that gives none: 100 pages of 100 fill the
    window of 10,000 records, the 101st is beyond it."""
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_APP_DEFAULT_PAGE_SIZE="100")))
    status, body = await search(api, history, page=100)
    assert status == 200, body
    status, body = await search(api, history, page=101)
    assert status == 400
    assert body["error"].startswith("page: page 101 of size 100 reaches beyond"), body


@pytest.mark.parametrize(
    "params", [{"page": 1000, "size": 10}, {"page": 1, "size": 10000}, {"page": 200}]
)
async def test_the_last_pages_of_the_window_are_answered(
    api: Client, history: StorageRef, params: dict[str, Any]
) -> None:
    status, body = await search(api, history, **params)
    assert status == 200, body
    assert body["page"] == params["page"]


async def test_a_scroll_may_live_24_hours(api: Client, history: StorageRef) -> None:
    status, body = await search(api, history, scroll=MAX_KEEP_ALIVE_MS, size=2)
    assert (status, body["size"]) == (200, 2)
    response = await api.post(
        "/history", json={"scrollId": body["scrollId"], "timeout": MAX_KEEP_ALIVE_MS}
    )
    assert response.status == 200
    too_long = await api.post(
        "/history", json={"scrollId": body["scrollId"], "timeout": MAX_KEEP_ALIVE_MS + 1}
    )
    assert too_long.status == 400
    assert (await too_long.json())["error"].startswith("timeout: ")


@pytest.mark.parametrize(
    ("params", "timestamps"),
    [
        ({"start": MAX_LONG}, []),
        ({"end": MAX_LONG}, [1000, 2000, 3000, 4000, 5000]),
        ({"start": 3000, "end": MAX_LONG}, [3000, 4000, 5000]),
        ({"start": MAX_LONG, "end": MAX_LONG}, []),
    ],
)
async def test_the_largest_timestamps_are_answered(
    api: Client, history: StorageRef, params: dict[str, Any], timestamps: list[int]
) -> None:
    status, body = await search(api, history, **params)
    assert status == 200, body
    assert [item["timestamp"] for item in body["items"]] == timestamps


async def test_a_scroll_holds_no_context_and_its_last_token_answers_no_items(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    es_proxy: CountingProxy,
    history: StorageRef,
    es: AsyncElasticsearch,
) -> None:
    """The loop of the original's clients: POST /history until a batch has no items. Each
    batch is a search of its own; Elasticsearch keeps nothing open between them."""
    api = await aiohttp_client(create_app(make_config(KV_STORAGE_ELASTICSEARCH_URI=es_proxy.url)))

    async def open_contexts() -> int:
        stats = await es.nodes.stats(metric="indices", index_metric="search")
        return sum(node["indices"]["search"]["scroll_current"] for node in stats["nodes"].values())

    before = await open_contexts()
    status, first = await search(api, history, scroll=60000, size=2, page=7)  # page is ignored
    assert status == 200
    assert set(first) == {"total", "size", "scrollId", "items"}
    assert (first["total"], first["size"]) == (5, 2)
    assert await open_contexts() == before
    seen = triples(first["items"])
    scroll_id = first["scrollId"]
    batches = []
    while True:
        response = await api.post("/history", json={"scrollId": scroll_id, "timeout": 60000})
        assert response.status == 200
        batch = await response.json()
        assert set(batch) == {"total", "size", "scrollId", "items"}
        batches.append(batch)
        seen += triples(batch["items"])
        scroll_id = batch["scrollId"]
        if not batch["items"]:
            break
        assert len(batches) < 10, "the scroll never ended"
    assert seen == triples(RECORDS)
    assert [batch["size"] for batch in batches] == [2, 1, 0]
    assert await open_contexts() == before
    assert batches[-1] == {"total": 5, "size": 0, "scrollId": batches[-2]["scrollId"], "items": []}
    assert es_proxy.count("POST", "/_search/scroll") == 0
    searches = es_proxy.count(path_part="/_search")
    assert searches == 3  # the first batch and two continuations; the empty answer asked none
    again = await api.post("/history", json={"scrollId": scroll_id, "timeout": 60000})
    assert (again.status, await again.json()) == (200, batches[-1])
    assert es_proxy.count(path_part="/_search") == searches


async def test_a_scroll_that_fits_in_one_batch_is_over_at_once(
    api: Client, history: StorageRef, es: AsyncElasticsearch
) -> None:
    status, body = await search(api, history, scroll=60000, size=10)
    assert (status, body["size"]) == (200, 5)
    response = await api.post("/history", json={"scrollId": body["scrollId"], "timeout": 1000})
    assert response.status == 200
    assert (await response.json())["items"] == []


async def test_an_empty_scroll_is_over_at_once(api: Client, create_storage: StorageFactory) -> None:
    storage = await create_storage(history_enabled=True)
    status, body = await search(api, storage, scroll=60000)
    assert (status, body["total"], body["items"]) == (200, 0, [])
    response = await api.post("/history", json={"scrollId": body["scrollId"], "timeout": 1000})
    assert await response.json() == {
        "total": 0,
        "size": 0,
        "scrollId": body["scrollId"],
        "items": [],
    }


def token(content: str) -> bytes:
    """A scroll id made by hand: URL-safe base64 of JSON, unsigned or signed with a guess."""
    encoded = base64.urlsafe_b64encode(content.encode()).decode().rstrip("=")
    return json.dumps({"scrollId": encoded, "timeout": 1000}).encode()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"scrollId": "x", "timeout": 0}', "application/json"),
        (b'{"scrollId": "x", "timeout": -1}', "application/json"),
        (b'{"scrollId": "x", "timeout": 1.5}', "application/json"),
        (b'{"scrollId": "x", "timeout": "1000"}', "application/json"),
        (b'{"scrollId": "x", "timeout": true}', "application/json"),
        (b'{"scrollId": 5, "timeout": 1000}', "application/json"),
        (b'{"timeout": 1000}', "application/json"),
        (b'{"scrollId": "x"}', "application/json"),
        (b"[]", "application/json"),
        (b"{", "application/json"),
        (b'{"scrollId": "x", "timeout": 1000}', "text/plain"),
        (b'{"scrollId": "not-a-scroll", "timeout": 1000}', "application/json"),
        (b'{"scrollId": "WyJub3QtZXMiLDBd", "timeout": 1000}', "application/json"),
        (token('{"finished": 5}'), "application/json"),  # the old, unsigned format
        (token('["DXF1ZXJ5QW5kRmV0Y2gBAAAAAAAAAAEWX1", 0]'), "application/json"),
        (b'{"scrollId": "e30.AAAA", "timeout": 1000}', "application/json"),
    ],
)
async def test_scroll_continuation_refuses_bad_requests(
    api: Client, body: bytes, content_type: str
) -> None:
    response = await api.post("/history", data=body, headers={"Content-Type": content_type})
    assert response.status == 400
    assert (await response.json())["error"]


def answer_validator(spec: dict[str, Any], path: str, method: str) -> Draft4Validator:
    """Validates against the documented 200 answer; Swagger 2.0's ``x-nullable`` becomes a
    ``null`` type, which is what it means."""

    def nullable(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: nullable(v) for k, v in node.items()}
            if node.pop("x-nullable", False):
                node["type"] = [node["type"], "null"]
        elif isinstance(node, list):
            node = [nullable(item) for item in node]
        return node

    schema = spec["paths"][path][method]["responses"]["200"]["schema"]
    return Draft4Validator({**schema, "definitions": nullable(spec["definitions"])})


async def test_the_spec_documents_every_real_answer(api: Client, history: StorageRef) -> None:
    spec = await (await api.get("/api/docs/swagger.json")).json()
    searched = answer_validator(spec, "/history/{storage_id}", "get")
    continued = answer_validator(spec, "/history", "post")
    _, page = await search(api, history, size=2)
    _, beyond = await search(api, history, size=2, page=9)
    _, first = await search(api, history, scroll=60000, size=2)
    for answer in (page, beyond, first):
        searched.validate(answer)
    scroll_id, batches = first["scrollId"], list[dict[str, Any]]()
    while not batches or batches[-1]["items"]:
        response = await api.post("/history", json={"scrollId": scroll_id, "timeout": 60000})
        batches.append(await response.json())
        scroll_id = batches[-1]["scrollId"]
        continued.validate(batches[-1])
    assert [batch["size"] for batch in batches] == [2, 1, 0]


async def test_temp_and_history_less_storages_are_400(
    api: Client, create_storage: StorageFactory
) -> None:
    for storage in (await create_storage("TEMP"), await create_storage(history_enabled=False)):
        status, body = await search(api, storage)
        assert status == 400
        assert "history" in body["error"]


async def test_history_enabled_storage_without_history_yet(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage(history_enabled=True)
    assert await search(api, storage) == (200, {"total": 0, "size": 0, "page": 1, "items": []})
    status, body = await search(api, storage, scroll=1000, sort="-value")
    assert status == 200
    assert (body["total"], body["size"], body["items"]) == (0, 0, [])


async def test_authorisation_and_existence(api: Client, history: StorageRef) -> None:
    assert (await api.get(f"/history/{history.id}")).status == 401
    wrong = await api.get(f"/history/{history.id}", headers={"Secret-Key": "wrong"})
    assert wrong.status == 401
    missing = await api.get("/history/no-such-storage", headers={"Secret-Key": "s"})
    assert missing.status == 404


async def test_the_services_own_history_is_searchable(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    create_storage: StorageFactory,
) -> None:
    config = make_config(KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="100ms")
    api = await aiohttp_client(create_app(config))
    storage = await create_storage(history_enabled=True)
    await put(api, storage, "mine", "v")

    async def searchable() -> bool:
        _, body = await search(api, storage)
        return bool(body["total"] == 1)

    await wait_until(searchable, what="the record searchable")
    _, body = await search(api, storage, keys="mine", operations="set")
    assert [(i["key"], i["value"], i["operation"]) for i in body["items"]] == [("mine", "v", "set")]


async def test_an_index_with_a_smaller_result_window_answers_400(
    api: Client, history: StorageRef, es: AsyncElasticsearch, index_prefix: str, storage_layout: str
) -> None:
    """An operator may lower ``index.max_result_window``: Elasticsearch's refusal of a page
    beyond it is the client's 400 naming ``page``, not a failure of Elasticsearch."""
    await es.indices.put_settings(
        index=placed(index_prefix, history.id, storage_layout).history_index,
        settings={"index.max_result_window": 3},
    )
    status, body = await search(api, history, page=2, size=2)
    assert status == 400
    assert body["error"].startswith("page: page 2 of size 2 reaches beyond the first 3 records")
