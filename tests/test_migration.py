"""``kv-storage import --from-elasticsearch``: a deployment of the original, built on a second
node as the original wrote it (registry documents, data documents with the key as their id
and a ``value``, history documents with automatic ids), carried into this deployment's
current layout: every storage, key, value, TTL and history record."""

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.app import create_app
from kv_storage.config import Config
from kv_storage.es.names import IndexNames
from kv_storage.es.registry import Registry
from kv_storage_client import AsyncClient, NotFoundError
from tests.helpers import ClientFactory

NOW_MS = int(time.time() * 1000)


@pytest.fixture
async def original(original_es_url: str) -> AsyncIterator[tuple[AsyncElasticsearch, str]]:
    """The source node, and a prefix of this test's own there (removed afterwards)."""
    prefix = f"o-{uuid.uuid4().hex[:8]}-"
    async with AsyncElasticsearch(original_es_url) as client:
        yield client, prefix
        names = await client.indices.get(index=f"{prefix}*", expand_wildcards="all")
        if names:
            await client.indices.delete(index=",".join(names))


STORAGES: dict[str, dict[str, Any]] = {
    "acct-1": {
        "document": {
            "type": "ACCOUNT",
            "deleted": False,
            "history_enabled": True,
            "secret_key": "secret-acct-1",
            "account": "acme",
            "name": "settings",
            "description": "d",
            "last_updated": NOW_MS,
        },
        "keys": {"mode": "blue", "a/b": "with a slash", ".": "dot", "empty": "", "ü": "ä"},
        "history": [
            {"key": "mode", "value": "red", "operation": "set", "timestamp": NOW_MS - 3000},
            {"key": "mode", "value": None, "operation": "delete", "timestamp": NOW_MS - 2000},
            {"key": None, "value": None, "operation": "clear", "timestamp": NOW_MS - 1500},
            {"key": "mode", "value": "blue", "operation": "set", "timestamp": NOW_MS - 1000},
        ],
    },
    "vm-1": {
        "document": {
            "type": "VM",
            "deleted": False,
            "history_enabled": False,
            "secret_key": "secret-vm-1",
            "last_updated": NOW_MS,
        },
        "keys": {f"k{n}": f"v{n}" for n in range(2500)},  # more than a page
        "history": [],
    },
    "temp-1": {
        "document": {
            "type": "TEMP",
            "deleted": False,
            "history_enabled": False,
            "secret_key": "secret-temp-1",
            "ttl": 3_600_000,
            "expiration_timestamp": NOW_MS + 3_000_000,
            "last_updated": NOW_MS,
        },
        "keys": {"t": "temporary"},
        "history": [],
    },
    "never-written": {
        "document": {
            "type": "ACCOUNT",
            "deleted": False,
            "history_enabled": True,
            "secret_key": "secret-nw",
            "account": "acme",
            "name": "empty",
            "last_updated": NOW_MS,
        },
        "keys": {},  # the original made its indices on the first write: none here
        "history": [],
    },
    "gone-1": {
        "document": {
            "type": "ACCOUNT",
            "deleted": True,
            "history_enabled": False,
            "secret_key": "secret-gone",
            "account": "acme",
            "name": "old",
            "last_updated": NOW_MS,
        },
        "keys": {"x": "y"},
        "history": [],
    },
}


async def build_original(client: AsyncElasticsearch, prefix: str) -> None:
    """As the original's code wrote it: ``_doc`` documents, the key as the data's id."""
    operations: list[dict[str, Any]] = []
    for storage_id, storage in STORAGES.items():
        operations += [
            {"index": {"_index": f"{prefix}storage-registry", "_id": storage_id}},
            storage["document"],
        ]
        for key, value in storage["keys"].items():
            operations += [
                {"index": {"_index": f"{prefix}storage-data-{storage_id}", "_id": key}},
                {"value": value},
            ]
        for record in storage["history"]:
            operations += [{"index": {"_index": f"{prefix}storage-history-{storage_id}"}}, record]
    answer = await client.bulk(operations=operations, refresh=True)
    assert not answer["errors"]


async def migrate(
    es_url: str, prefix: str, source: str, source_prefix: str, progress: Path
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kv_storage",
        "import",
        "--from-elasticsearch",
        source,
        "--source-prefix",
        source_prefix,
        "--progress-file",
        str(progress),
        env={
            **os.environ,
            "KV_STORAGE_ELASTICSEARCH_URI": es_url,
            "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": prefix,
            "KV_STORAGE_ELASTICSEARCH_LAYOUT": "shared",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_deployment_of_the_original_arrives_whole(
    original: tuple[AsyncElasticsearch, str],
    original_es_url: str,
    initialised_config: Config,
    make_config: Callable[..., Config],
    aiohttp_client: ClientFactory,
    es: AsyncElasticsearch,
    es_url: str,
    index_prefix: str,
    tmp_path: Path,
) -> None:
    source, source_prefix = original
    await build_original(source, source_prefix)
    progress = tmp_path / "progress.json"
    code, out, err = await migrate(es_url, index_prefix, original_es_url, source_prefix, progress)
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert (summary["storages"], summary["deleted"], summary["keys"], summary["records"]) == (
        4,
        1,
        2506,
        4,
    )
    assert not progress.exists()
    service = await aiohttp_client(create_app(make_config()))
    async with AsyncClient(str(service.make_url(""))) as client:
        for storage_id, storage in STORAGES.items():
            kv = client.storage(storage_id, storage["document"]["secret_key"])
            if storage["document"]["deleted"]:
                with pytest.raises(NotFoundError):
                    await kv.list()
                continue
            keys = await kv.list()
            assert sorted(keys) == sorted(storage["keys"]), storage_id
            values = await kv.get_many(keys) if keys else {}
            assert values == storage["keys"], storage_id
            if storage["document"]["history_enabled"]:
                records = sorted(
                    [(r.key, r.value, r.operation, r.timestamp) async for r in kv.history()],
                    key=repr,
                )
                wanted = sorted(
                    [
                        (r["key"], r["value"], r["operation"], r["timestamp"])
                        for r in storage["history"]
                    ],
                    key=repr,
                )
                assert records == wanted, storage_id
    registry = Registry(es, IndexNames(index_prefix))
    temp = await registry.read("temp-1")
    assert temp is not None
    assert (temp.ttl_ms, temp.expiration_timestamp_ms) == (
        3_600_000,
        STORAGES["temp-1"]["document"]["expiration_timestamp"],
    )
    account = await registry.read("acct-1")
    assert account is not None
    assert (account.account, account.name, account.description, account.layout.value) == (
        "acme",
        "settings",
        "d",
        "shared",
    )

    # Run again: nothing changes, every record is found there already.
    code, out, err = await migrate(es_url, index_prefix, original_es_url, source_prefix, progress)
    assert code == 0, err
    again = json.loads(out.splitlines()[-1])
    assert (again["keys"], again["records"], again["present"]) == (2506, 0, 4)
