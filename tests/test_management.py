"""PUT /storage/<id>?ttl= and DELETE /storage/<id>: every row of the original's tables, and
TTL updates racing each other."""

import asyncio
import time

import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.app import create_app
from kv_storage.config import Config
from kv_storage.es.names import IndexNames
from tests.conftest import BOTH_LAYOUTS, StorageFactory
from tests.helpers import Client, ClientFactory, closed_to_writes, get, put


async def registry_document(
    es: AsyncElasticsearch, index_prefix: str, storage_id: str
) -> dict[str, object]:
    found = await es.get(index=IndexNames(index_prefix).registry, id=storage_id)
    return dict(found["_source"])


@BOTH_LAYOUTS
async def test_ttl_update_moves_the_expiration_by_the_difference(
    api: Client, create_storage: StorageFactory, es: AsyncElasticsearch, index_prefix: str
) -> None:
    expiration = int(time.time() * 1000) + 3_600_000
    storage = await create_storage("TEMP", expiration_timestamp=expiration)  # ttl 3 600 000
    before = int(time.time() * 1000)
    response = await api.put(
        f"/storage/{storage.id}", params={"ttl": "7200000"}, headers=storage.headers
    )
    assert response.status == 200
    document = await registry_document(es, index_prefix, storage.id)
    assert document["ttl"] == 7_200_000
    assert document["expiration_timestamp"] == expiration - 3_600_000 + 7_200_000
    assert int(document["last_updated"]) >= before  # type: ignore[call-overload]


@BOTH_LAYOUTS
async def test_a_shorter_ttl_ends_the_storage(api: Client, create_storage: StorageFactory) -> None:
    storage = await create_storage("TEMP", expiration_timestamp=int(time.time() * 1000) + 3_600_000)
    await put(api, storage, "k", "v")
    response = await api.put(f"/storage/{storage.id}", params={"ttl": "1"}, headers=storage.headers)
    assert response.status == 200
    assert (await get(api, storage, "k"))[0] == 404  # this instance forgot its cached copy


@pytest.mark.parametrize("storage_type", ["ACCOUNT", "VM"])
async def test_only_temp_storages_are_managed(
    api: Client, create_storage: StorageFactory, storage_type: str
) -> None:
    storage = await create_storage(storage_type)
    for method, params in (("PUT", {"ttl": "1000"}), ("DELETE", {})):
        response = await api.request(
            method, f"/storage/{storage.id}", params=params, headers=storage.headers
        )
        assert response.status == 400
        assert "not a TEMP storage" in (await response.json())["error"]


@pytest.mark.parametrize("ttl", [None, "", "abc", "1.5", "0", "-10"])
async def test_missing_or_invalid_ttl_is_400(
    api: Client, create_storage: StorageFactory, ttl: str | None
) -> None:
    storage = await create_storage("TEMP")
    params = {} if ttl is None else {"ttl": ttl}
    response = await api.put(f"/storage/{storage.id}", params=params, headers=storage.headers)
    assert response.status == 400
    assert (await response.json())["error"].startswith("ttl: ")


async def test_a_ttl_beyond_the_largest_timestamp_is_400(
    api: Client, create_storage: StorageFactory, es: AsyncElasticsearch, index_prefix: str
) -> None:
    storage = await create_storage("TEMP")
    before = await registry_document(es, index_prefix, storage.id)
    # A valid long, but the expiration (old expiration - old TTL + new TTL) would not be one.
    for ttl in (str(2**63 - 1), str(2**63 - 1 - 3_600_000)):
        response = await api.put(
            f"/storage/{storage.id}", params={"ttl": ttl}, headers=storage.headers
        )
        assert response.status == 400
        assert (await response.json())["error"].startswith("ttl: ")
    assert await registry_document(es, index_prefix, storage.id) == before


async def test_missing_wrong_secret_and_missing_storage(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage("TEMP")
    for method, params in (("PUT", {"ttl": "1000"}), ("DELETE", {})):
        assert (await api.request(method, f"/storage/{storage.id}", params=params)).status == 401
        wrong = await api.request(
            method, f"/storage/{storage.id}", params=params, headers={"Secret-Key": "x"}
        )
        assert wrong.status == 401
        missing = await api.request(
            method, "/storage/no-such-storage", params=params, headers={"Secret-Key": "x"}
        )
        assert missing.status == 404


@pytest.mark.parametrize("stored", [None, ""])
async def test_a_storage_without_a_secret_accepts_no_secret_key(
    api: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    stored: str | None,
) -> None:
    storage = await create_storage("TEMP")
    document = await registry_document(es, index_prefix, storage.id)
    if stored is None:
        del document["secret_key"]
    else:
        document["secret_key"] = stored
    await es.index(
        index=IndexNames(index_prefix).registry, id=storage.id, document=document, refresh=True
    )
    empty = {"Secret-Key": ""}
    for method, url, params in (
        ("GET", f"/get/{storage.id}/k", {}),
        ("PUT", f"/storage/{storage.id}", {"ttl": "1000"}),
        ("DELETE", f"/storage/{storage.id}", {}),
    ):
        response = await api.request(method, url, params=params, headers=empty)
        assert response.status == 401, (method, url)
    assert await registry_document(es, index_prefix, storage.id) == document  # unchanged


@BOTH_LAYOUTS
async def test_delete_marks_deleted_and_closes_the_data_to_writes(
    api: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    storage_layout: str,
) -> None:
    """Per-storage: its index carries the write block; shared: its purge is the sweep's
    (``test_layouts``). Either way it is gone for reads and writes at once."""
    storage = await create_storage("TEMP")
    await put(api, storage, "k", "v")
    response = await api.delete(f"/storage/{storage.id}", headers=storage.headers)
    assert response.status == 200
    document = await registry_document(es, index_prefix, storage.id)
    assert document["deleted"] is True
    if storage_layout == "per-storage":
        assert await closed_to_writes(es, IndexNames(index_prefix).data(storage.id))
    assert (await get(api, storage, "k"))[0] == 404
    written = await api.put(
        f"/set/{storage.id}/k", data=b"w", headers={**storage.headers, "Content-Type": "text/plain"}
    )
    assert written.status == 404
    again = await api.delete(f"/storage/{storage.id}", headers=storage.headers)
    assert again.status == 404


@pytest.mark.parametrize("instances", [1, 2])
@BOTH_LAYOUTS
async def test_concurrent_ttl_updates_lose_nothing(
    api: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    index_prefix: str,
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    instances: int,
) -> None:
    """40 updates at once, through one instance or spread over two (whose writes race in
    Elasticsearch): every one succeeds."""
    clients = [api] + [
        await aiohttp_client(create_app(initialised_config)) for _ in range(instances - 1)
    ]
    expiration = int(time.time() * 1000) + 3_600_000
    storage = await create_storage("TEMP", expiration_timestamp=expiration)
    ttls = [1_000_000 + n * 1000 for n in range(40)]
    answers = await asyncio.gather(
        *(
            clients[n % instances].put(
                f"/storage/{storage.id}", params={"ttl": str(t)}, headers=storage.headers
            )
            for n, t in enumerate(ttls)
        )
    )
    assert [answer.status for answer in answers] == [200] * len(ttls)
    document = await registry_document(es, index_prefix, storage.id)
    assert document["ttl"] in ttls
    # Each update moved the expiration by its difference from the one before: the result is
    # as if they ran one after another, whatever the order.
    ttl = document["ttl"]
    assert isinstance(ttl, int)
    assert document["expiration_timestamp"] == expiration - 3_600_000 + ttl
    assert document["deleted"] is False
