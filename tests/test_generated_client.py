"""A client generated from the OpenAPI 3 document by a maintained generator installed from
PyPI (openapi-generator-cli, which ships its jar; Python, as a client author would make one),
calling every storage, history and administration operation against the real service.

openapi-python-client (also on PyPI) reads the document too, but it skips operations whose
request body is ``text/plain`` (the single set, as the original's API has it), so it could
not call every operation."""

import asyncio
import importlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kv_storage.app import create_app
from kv_storage.config import Config
from tests.helpers import Client, ClientFactory

TOKEN = "admin-token-for-generated-client-0123456789"
PACKAGE = "generated_kv_client"
GENERATOR = Path(sys.executable).parent / "openapi-generator-cli"


@pytest.fixture
async def service(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> Client:
    config = make_config(KV_STORAGE_ADMIN_TOKEN=TOKEN, KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="100ms")
    return await aiohttp_client(create_app(config))


def generate(document: dict[str, Any], where: Path) -> ModuleType:
    """The client package made from ``document`` in ``where``, imported."""
    if shutil.which("java") is None or not GENERATOR.exists():
        pytest.fail("openapi-generator-cli and a JDK are test tools: scripts/setup.sh --test-tools")
    spec = where / "openapi.json"
    spec.write_text(json.dumps(document))
    generated = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "-i",
            str(spec),
            "-g",
            "python",
            "-o",
            str(where / "out"),
            "--package-name",
            PACKAGE,
            "--global-property",
            "apiTests=false,modelTests=false,apiDocs=false,modelDocs=false",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert generated.returncode == 0, generated.stdout[-2000:] + generated.stderr[-2000:]
    sys.path.insert(0, str(where / "out"))
    try:
        return importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where / "out"))


def every_operation(kv: Any, url: str) -> dict[str, Any]:
    """Each operation of the document, called once (blocking: the generated client is
    synchronous); what they answered, for the test to check."""
    seen: dict[str, Any] = {}
    configuration = kv.Configuration(host=url, access_token=TOKEN)
    with kv.ApiClient(configuration) as client:
        admin = kv.AdministrationApi(client)
        created = admin.create_storage(
            kv.CreateStorage(type="ACCOUNT", account="generated", name="n", history_enabled=True)
        )
        sid, secret = created.id, created.secret_key
        ops = kv.StorageOperationsApi(client)
        ops.set_value(secret, sid, "k1", "v1")
        seen["get_value"] = ops.get_value(secret, sid, "k1")
        seen["set_values"] = ops.set_values(secret, sid, {"k2": "v2", "k3": "v3"})
        seen["get_values"] = ops.get_values(secret, sid, ["k1", "k2", "nope"])
        ops.delete_value(secret, sid, "k1")
        seen["delete_values"] = ops.delete_values(secret, sid, ["k2"])
        seen["list_keys"] = ops.list_keys(secret, sid)
        ops.clear(secret, sid)
        seen["after_clear"] = ops.list_keys(secret, sid)
        try:
            ops.get_value("not-the-secret", sid, "k3")
        except kv.ApiException as error:
            seen["refused"] = (error.status, json.loads(error.body)["error"])
        history = kv.StorageHistoryApi(client)
        deadline = time.monotonic() + 30  # records are written within the flush timeout
        while history.search_history(secret, sid, size=1).total < 6:
            assert time.monotonic() < deadline, "the history was not written"
            time.sleep(0.05)
        seen["page"] = history.search_history(secret, sid, operations="set", sort="key", size=2)
        first = history.search_history(secret, sid, scroll=60_000, size=4)
        following = history.continue_history(
            kv.ScrollRequest(scroll_id=first.scroll_id, timeout=60_000)
        )
        seen["scrolled"] = len(first.items) + len(following.items)
        seen["show"] = admin.show_storage(sid)
        seen["listed"] = [s.id for s in admin.list_storages(account="generated").items]
        rotated = admin.rotate_secret(sid)
        seen["rotated"] = ops.list_keys(rotated.secret_key, sid)
        seen["deleted"] = admin.delete_storage(sid).deleted
        temp = admin.create_storage(kv.CreateStorage(type="TEMP", ttl=3_600_000))
        management = kv.StorageManagementApi(client)
        management.update_ttl(temp.secret_key, temp.id, ttl=7_200_000)
        seen["ttl"] = admin.show_storage(temp.id).ttl
        management.delete_temp(temp.secret_key, temp.id)
        seen["temp_deleted"] = admin.show_storage(temp.id).deleted
        seen["health"] = kv.HealthApi(client).health(detailed=True).status
        seen["sid"] = sid
    return seen


async def test_a_generated_client_calls_every_operation(service: Client, tmp_path: Path) -> None:
    document = await (await service.get("/api/docs/openapi.json")).json()
    kv = await asyncio.to_thread(generate, document, tmp_path)
    seen = await asyncio.to_thread(every_operation, kv, str(service.make_url("")).rstrip("/"))
    assert seen["get_value"] == "v1"
    assert seen["set_values"] == {"k2": True, "k3": True}
    assert seen["get_values"] == {"k1": "v1", "k2": "v2", "nope": None}
    assert seen["delete_values"] == {"k2": True}
    assert seen["list_keys"] == ["k3"]
    assert seen["after_clear"] == []
    assert seen["refused"][0] == 401
    assert "Secret-Key" in seen["refused"][1]
    assert [item.key for item in seen["page"].items] == ["k1", "k2"]
    assert seen["page"].total == 3
    assert seen["scrolled"] == 6  # three sets, two deletes, a clear
    assert seen["show"].history_enabled is True
    assert seen["listed"] == [seen["sid"]]
    assert seen["rotated"] == []
    assert seen["deleted"] is True
    assert seen["ttl"] == 7_200_000
    assert seen["temp_deleted"] is True
    assert seen["health"] == "HEALTHY"
