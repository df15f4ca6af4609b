"""``kv-storage export`` and ``kv-storage import`` as processes against the real node: a
storage of 10,000 keys with its history moved to another deployment, an import cut short
and resumed, the conflict policies, and bad input."""

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from elasticsearch import AsyncElasticsearch

from kv_storage.app import create_app
from kv_storage.config import Config
from kv_storage.es.provisioning import initialise
from kv_storage.transfer_cli import EXIT_CONFLICT, EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from kv_storage_client import AsyncClient, AsyncStorage
from tests.conftest import BOTH_LAYOUTS, StorageFactory, StorageRef
from tests.helpers import Client, ClientFactory
from tests.waiting import wait_until

KEYS = 10_000


async def command(es_url: str, prefix: str, layout: str, *arguments: str) -> tuple[int, str, str]:
    """``kv-storage ARGUMENTS`` against the deployment of ``prefix``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kv_storage",
        *arguments,
        env={
            **os.environ,
            "KV_STORAGE_ELASTICSEARCH_URI": es_url,
            "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": prefix,
            "KV_STORAGE_ELASTICSEARCH_LAYOUT": layout,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def service(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> Client:
    return await aiohttp_client(
        create_app(make_config(KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="100ms"))
    )


def client_of(service: Client, ref: StorageRef) -> tuple[AsyncClient, AsyncStorage]:
    client = AsyncClient(str(service.make_url("")))
    return client, client.storage(ref.id, ref.secret_key)


async def filled(
    service: Client, ref: StorageRef, keys: int, *, history: bool, delete_first: bool = True
) -> dict[str, str]:
    """``keys`` keys written through the API, then the first deleted (with ``history``: once
    their records are written)."""
    pairs = {f"key/{n:05}": f"value {n} ✓" for n in range(keys)}
    client, storage = client_of(service, ref)
    async with client:
        items = list(pairs.items())
        for start in range(0, len(items), 5000):
            assert all((await storage.set_many(dict(items[start : start + 5000]))).values())
        if delete_first:
            await storage.delete("key/00000")
            pairs.pop("key/00000")
        if history:

            async def recorded() -> bool:
                total = (await storage.history_page(size=1)).total
                return total == keys + delete_first

            await wait_until(recorded, timeout_s=60, what="the history to be written")
    return pairs


Record = tuple[str | None, str | None, str, int]


async def contents(service: Client, ref: StorageRef) -> tuple[dict[str, str | None], list[Record]]:
    """Every key's value, and every history record, of a storage with history."""
    client, storage = client_of(service, ref)
    async with client:
        keys = await storage.list()
        values: dict[str, str | None] = {}
        for start in range(0, len(keys), 5000):
            values |= await storage.get_many(keys[start : start + 5000])
        records = [(r.key, r.value, r.operation, r.timestamp) async for r in storage.history()]
    return values, sorted(records, key=repr)


@BOTH_LAYOUTS
async def test_a_storage_with_history_moves_to_another_deployment(
    service: Client,
    create_storage: StorageFactory,
    es: AsyncElasticsearch,
    es_url: str,
    index_prefix: str,
    storage_layout: str,
    make_config: Callable[..., Config],
    aiohttp_client: ClientFactory,
    tmp_path: Path,
) -> None:
    ref = await create_storage(history_enabled=True)
    pairs = await filled(service, ref, KEYS, history=True, delete_first=False)
    before = await contents(service, ref)
    export = tmp_path / "storage.jsonl"
    code, _, err = await command(
        es_url,
        index_prefix,
        storage_layout,
        "export",
        ref.id,
        "--history",
        "--with-secret",
        "-o",
        str(export),
    )
    assert code == EXIT_OK, err
    assert f"{KEYS} keys and {KEYS} history records" in err
    lines = export.read_text().splitlines()
    assert json.loads(lines[0])["storage"]["secretKey"] == ref.secret_key
    assert json.loads(lines[-1]) == {"end": {"keys": KEYS, "records": KEYS}}

    other = f"{index_prefix}b-"  # a second deployment on the same node
    await initialise(es, other)
    code, out, err = await command(es_url, other, storage_layout, "import", str(export))
    assert code == EXIT_OK, err
    summary = json.loads(out.splitlines()[-1])
    assert (summary["storage"], summary["keys"], summary["records"]) == (ref.id, KEYS, KEYS)
    there = await aiohttp_client(
        create_app(make_config(KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX=other))
    )
    after = await contents(there, ref)  # the same secret opens it
    assert after == before
    assert after[0] == pairs


async def test_an_import_cut_short_goes_on_where_it_stopped(
    service: Client,
    create_storage: StorageFactory,
    es_url: str,
    index_prefix: str,
    storage_layout: str,
    tmp_path: Path,
) -> None:
    ref = await create_storage(history_enabled=True)
    await filled(service, ref, 3000, history=True)
    export = tmp_path / "storage.jsonl"
    args = (es_url, index_prefix, storage_layout)
    assert (await command(*args, "export", ref.id, "--history", "-o", str(export)))[0] == EXIT_OK
    lines = export.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut" / "storage.jsonl"  # the same name: the same progress file beside it
    cut.parent.mkdir()
    cut.write_bytes(b"".join(lines[: len(lines) // 2]))  # as a copy stopped half way
    progress = tmp_path / "progress.json"
    into = ("--into", "copy-of-" + ref.id[:8], "--progress-file", str(progress))
    code, out, err = await command(*args, "import", str(cut), *into)
    assert code == EXIT_FAILURE
    assert "cut short" in err
    created = json.loads(out.splitlines()[0])  # a new storage, a new secret
    done = json.loads(progress.read_text())
    assert 0 < done["offset"] < export.stat().st_size
    code, out, err = await command(*args, "import", str(export), *into)
    assert code == EXIT_OK, err
    assert f"going on from byte {done['offset']}" in err
    assert not progress.exists()
    copy = StorageRef(created["id"], created["secretKey"])
    assert await contents(service, copy) == await contents(service, ref)


async def test_conflict_policies_and_a_second_import_of_the_same_file(
    service: Client,
    create_storage: StorageFactory,
    es_url: str,
    index_prefix: str,
    storage_layout: str,
    tmp_path: Path,
) -> None:
    source = await create_storage(history_enabled=True)
    await filled(service, source, 10, history=True)
    export = tmp_path / "storage.jsonl"
    args = (es_url, index_prefix, storage_layout)
    assert (await command(*args, "export", source.id, "--history", "-o", str(export)))[0] == 0
    target = await create_storage()  # no history: its records are not kept
    client, storage = client_of(service, target)
    async with client:
        await storage.set_many({"key/00003": "theirs", "key/00004": "value 4 ✓"})
        into = ("import", str(export), "--into", target.id)
        code, _, err = await command(*args, *into)
        assert code == EXIT_CONFLICT
        assert "'key/00003'" in err  # key/00004 holds the very value imported: no conflict
        assert await storage.get("key/00005") is None  # nothing of the page was written
        code, out, err = await command(*args, *into, "--on-conflict", "skip")
        assert code == EXIT_OK, err
        summary = json.loads(out)
        assert (summary["keys"], summary["skipped"], summary["not_kept"]) == (7, 2, 11)
        assert await storage.get("key/00003") == "theirs"
        assert await storage.get("key/00005") == "value 5 ✓"
        code, out, err = await command(*args, *into, "--on-conflict", "overwrite")
        assert code == EXIT_OK, err
        assert await storage.get("key/00003") == "value 3 ✓"
        code, out, err = await command(*args, *into)  # everything holds what it imports
        assert code == EXIT_OK, err
    again = ("import", str(export), "--into", source.id)
    code, out, err = await command(*args, *again)
    assert code == EXIT_OK, err
    assert (json.loads(out)["records"], json.loads(out)["present"]) == (0, 11)


async def test_bad_exports_are_refused_with_where(
    initialised_config: Config, es_url: str, index_prefix: str, storage_layout: str, tmp_path: Path
) -> None:
    args = (es_url, index_prefix, storage_layout)
    not_ours = tmp_path / "other.jsonl"
    not_ours.write_text('{"hello": 1}\n')
    code, _, err = await command(*args, "import", str(not_ours))
    assert code == EXIT_USAGE
    assert "not an export of kv-storage" in err
    broken = tmp_path / "broken.jsonl"
    header = {
        "kvStorageExport": 1,
        "storage": {"id": "broken-1", "type": "ACCOUNT", "account": "a", "name": "n"},
    }
    broken.write_text(json.dumps(header) + "\n" + '{"key": "", "value": "v"}\n')
    code, _, err = await command(*args, "import", str(broken))
    assert code == EXIT_USAGE
    assert "at byte" in err
    assert "non-empty string" in err
    code, _, err = await command(*args, "export", "no-such-storage")
    assert code == 3
