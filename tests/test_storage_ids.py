"""Storage ids: only what Elasticsearch index names and URLs take as they are; anything else
is 400 on every route and in the administration API, and never reaches Elasticsearch (an id
such as ``sec-vm-ÄÖ`` used to be created, and every set on it answered 500)."""

from collections.abc import Callable
from urllib.parse import quote

import pytest
from elasticsearch import AsyncElasticsearch
from yarl import URL

from kv_storage.app import create_app
from kv_storage.config import Config
from tests.helpers import Client, ClientFactory

TOKEN = "admin-token-for-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}

BAD_IDS = [
    "sec-vm-ÄÖ",  # lower case, but not ASCII: Elasticsearch refuses the index name
    "vm\x00one",
    "trailing-newline\n",
    "Upper",
    "-leading-dash",
    "_leading-underscore",
    ".leading-dot",
    "..",
    "with space",
    "with,comma",
    "with*star",
    "x" * 129,
]
GOOD_IDS = ["read-only", "0b5a5f1e-5d7a-4e0b-9a61-2c4d8e7f1a90", "a", "v.m_1-2", "x" * 128]

ROUTES = [
    ("GET", "/get/{id}/k", None, None),
    ("POST", "/get/{id}", "application/json", b'["k"]'),
    ("PUT", "/set/{id}/k", "text/plain", b"v"),
    ("PUT", "/set/{id}", "application/json", b'{"k": "v"}'),
    ("DELETE", "/delete/{id}/k", None, None),
    ("POST", "/delete/{id}", "application/json", b'["k"]'),
    ("GET", "/list/{id}", None, None),
    ("POST", "/clear/{id}", None, None),
    ("GET", "/history/{id}", None, None),
    ("PUT", "/storage/{id}?ttl=1000", None, None),
    ("DELETE", "/storage/{id}", None, None),
]


@pytest.fixture
async def admin(
    make_config: Callable[..., Config], initialised_config: Config, aiohttp_client: ClientFactory
) -> Client:
    return await aiohttp_client(create_app(make_config(KV_STORAGE_ADMIN_TOKEN=TOKEN)))


def _url(template: str, storage_id: str) -> URL:
    encoded = quote(storage_id, safe="").replace(".", "%2E")
    return URL(template.replace("{id}", encoded), encoded=True)


@pytest.mark.parametrize("storage_id", BAD_IDS, ids=repr)
async def test_an_id_no_storage_can_have_is_400_on_every_route(
    admin: Client, es: AsyncElasticsearch, index_prefix: str, storage_id: str
) -> None:
    for method, template, content_type, body in ROUTES:
        headers = {"Secret-Key": "s"} | ({"Content-Type": content_type} if content_type else {})
        response = await admin.request(
            method, _url(template, storage_id), data=body, headers=headers
        )
        answer = await response.json()
        assert response.status == 400, (method, template, answer)
        assert "lower-case ASCII letters" in answer["error"], answer
    for method, template in [
        ("GET", "/admin/storages/{id}"),
        ("DELETE", "/admin/storages/{id}"),
        ("POST", "/admin/storages/{id}/secret-key"),
    ]:
        response = await admin.request(method, _url(template, storage_id), headers=ADMIN)
        assert response.status == 400, (method, template, await response.text())
    response = await admin.post(
        "/admin/storages", json={"type": "VM", "vm": storage_id}, headers=ADMIN
    )
    answer = await response.json()
    assert response.status == 400, answer
    assert "vm" in answer["error"], answer
    indices = await es.indices.get(index=f"{index_prefix}*", expand_wildcards="all")
    assert all(storage_id not in name for name in indices), list(indices)


@pytest.mark.parametrize("storage_id", GOOD_IDS, ids=lambda i: i[:20])
async def test_a_vm_storage_of_any_valid_id_takes_sets(admin: Client, storage_id: str) -> None:
    response = await admin.post(
        "/admin/storages", json={"type": "VM", "vm": storage_id}, headers=ADMIN
    )
    assert response.status == 201, await response.text()
    secret = (await response.json())["secretKey"]
    headers = {"Secret-Key": secret, "Content-Type": "text/plain"}
    response = await admin.put(_url("/set/{id}/k", storage_id), data=b"v", headers=headers)
    assert response.status == 200, await response.text()
    response = await admin.get(_url("/get/{id}/k", storage_id), headers=headers)
    assert (response.status, await response.text()) == (200, "v")
