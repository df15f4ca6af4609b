"""Schemathesis against the service's own OpenAPI document, with real storages and their
secrets: no answer may be a 5xx or contradict the document (status, content type, body).

The fuzzing only says something about an operation when it gets past the 404s and 401s, so
each operation that can end or re-key a storage fuzzes a storage of its own, and the test
reads schemathesis' HAR report to check that every storage operation was answered 2xx at
least once.
"""

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kv_storage.config import Config
from tests.conftest import StorageFactory
from tests.helpers import Client
from tests.processes import service_process

pytestmark = pytest.mark.slow  # thousands of generated requests

TOKEN = "fuzzing-admin-token-0123456789abcdef"
SCHEMATHESIS_TIMEOUT_S = 300

# Operations that end or re-key the storage they are given: each gets a storage of its own,
# so that the others keep fuzzing a storage that exists and whose Secret-Key is right.
_DESTRUCTIVE = {
    "DELETE /admin/storages/{storage_id}": "ACCOUNT",
    "POST /admin/storages/{storage_id}/secret-key": "ACCOUNT",
    "DELETE /storage/{storage_id}": "TEMP",
    "PUT /storage/{storage_id}": "TEMP",
}

# (method, path pattern) of the operations that must get past validation and authorisation.
_MUST_SUCCEED = {
    "GET /get/{storage_id}/{key}": ("GET", r"/get/[^/]+/.+"),
    "POST /get/{storage_id}": ("POST", r"/get/[^/]+"),
    "PUT /set/{storage_id}/{key}": ("PUT", r"/set/[^/]+/.+"),
    "PUT /set/{storage_id}": ("PUT", r"/set/[^/]+"),
    "DELETE /delete/{storage_id}/{key}": ("DELETE", r"/delete/[^/]+/.+"),
    "POST /delete/{storage_id}": ("POST", r"/delete/[^/]+"),
    "GET /list/{storage_id}": ("GET", r"/list/[^/]+"),
    "POST /clear/{storage_id}": ("POST", r"/clear/[^/]+"),
    "GET /history/{storage_id}": ("GET", r"/history/[^/]+"),
    "DELETE /admin/storages/{storage_id}": ("DELETE", r"/admin/storages/[^/]+"),
    "POST /admin/storages/{storage_id}/secret-key": ("POST", r"/admin/storages/[^/]+/secret-key"),
    "PUT /storage/{storage_id}": ("PUT", r"/storage/[^/]+"),
    "DELETE /storage/{storage_id}": ("DELETE", r"/storage/[^/]+"),
}


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of ASCII is a valid TOML basic string


def _config(main: dict[str, Any], own: dict[str, dict[str, Any]]) -> str:
    """The schemathesis configuration: ``main``'s id everywhere, but each operation of
    ``_DESTRUCTIVE`` on the storage ``own[operation]`` with that storage's Secret-Key."""
    lines = ["[parameters]", f'"path.storage_id" = {_toml_string(main["id"])}', ""]
    for name, storage in own.items():
        lines += [
            "[[operations]]",
            f"include-name = {_toml_string(name)}",
            f'parameters = {{ "path.storage_id" = {_toml_string(storage["id"])} }}',
            f'headers = {{ "Secret-Key" = {_toml_string(storage["secretKey"])} }}',
            "",
        ]
    return "\n".join(lines)


def _successes(har: dict[str, Any], base: str) -> dict[str, int]:
    """How many 2xx answers each operation of ``_MUST_SUCCEED`` got, from a HAR report."""
    counts = dict.fromkeys(_MUST_SUCCEED, 0)
    for entry in har["log"]["entries"]:
        if not 200 <= entry["response"]["status"] < 300:
            continue
        path = entry["request"]["url"].removeprefix(base).split("?")[0]
        for name, (method, pattern) in _MUST_SUCCEED.items():
            if entry["request"]["method"] == method and re.fullmatch(pattern, path):
                counts[name] += 1
    return counts


@pytest.mark.timeout(SCHEMATHESIS_TIMEOUT_S + 60)  # the run, plus starting the service
async def test_schemathesis_finds_nothing(
    es_url: str, index_prefix: str, initialised_config: Config, unused_tcp_port: int, tmp_path: Path
) -> None:
    environ = {
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        "KV_STORAGE_ADMIN_TOKEN": TOKEN,
    }
    async with (
        service_process(environ, unused_tcp_port) as (_, base),
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
    ):

        async def new_storage(storage_type: str) -> dict[str, Any]:
            document: dict[str, Any] = {"type": storage_type}
            if storage_type == "TEMP":
                document["ttl"] = 3_600_000
            else:
                document |= {"account": "fuzz", "name": "n", "historyEnabled": True}
            async with session.post(f"{base}/admin/storages", json=document) as answer:
                assert answer.status == 201, await answer.text()
                return dict(await answer.json())

        main = await new_storage("ACCOUNT")
        own = {name: await new_storage(kind) for name, kind in _DESTRUCTIVE.items()}
        config = tmp_path / "schemathesis.toml"
        config.write_text(_config(main, own))
        har = tmp_path / "report.har"
        command = [
            shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            f"{base}/api/docs/swagger.json",
            "-H",
            f"Secret-Key: {main['secretKey']}",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--max-examples",
            "30",
            "--seed",
            "20261124",
            # Rules across fields (start <= end, which fields a storage type takes, scroll ids
            # that must exist) are beyond what Swagger 2.0 can state: their 400s are by design.
            "--exclude-checks",
            "positive_data_acceptance",
            "--request-timeout",
            "10",
            "--report",
            "har",
            "--report-har-path",
            str(har),
        ]
        # In tmp_path, schemathesis' cache (.schemathesis/) stays out of the worktree.
        result = await asyncio.to_thread(
            subprocess.run,
            command,
            capture_output=True,
            text=True,
            timeout=SCHEMATHESIS_TIMEOUT_S,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "no failures" in result.stdout.lower() or " passed" in result.stdout, result.stdout[
        -3000:
    ]
    successes = _successes(json.loads(har.read_text()), base)
    assert all(successes.values()), f"operations never answered 2xx: {successes}"


async def test_regressions_found_by_fuzzing(api: Client, create_storage: StorageFactory) -> None:
    """Empty 200 answers carry a documented content type (found by schemathesis: none at all)."""
    storage = await create_storage()
    headers = {**storage.headers, "Content-Type": "text/plain"}
    response = await api.put(f"/set/{storage.id}/k", data=b"v", headers=headers)
    assert response.status == 200
    assert response.content_type == "text/plain"
    spec = await (await api.get("/api/docs/swagger.json")).json()
    assert "text/plain" in spec["paths"]["/set/{storage_id}/{key}"]["put"]["produces"]
    health = await api.get("/health")
    assert health.status == 200
    assert health.content_type in spec["paths"]["/health"]["get"]["produces"]


async def test_continuing_a_scroll_that_is_over_answers_no_items(
    api: Client, create_storage: StorageFactory
) -> None:
    """Found by schemathesis: a scroll of a storage without history records yet is over at its
    first batch; continuing it answered 500 (Elasticsearch: 503, a scroll over no shards)."""
    storage = await create_storage(history_enabled=True)
    first = await api.get(f"/history/{storage.id}?scroll=60000", headers=storage.headers)
    assert first.status == 200
    body = await first.json()
    assert body["items"] == []
    answer = await api.post("/history", json={"scrollId": body["scrollId"], "timeout": 1})
    assert answer.status == 200
    assert await answer.json() == {
        "total": 0,
        "size": 0,
        "scrollId": body["scrollId"],
        "items": [],
    }
