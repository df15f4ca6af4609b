"""The original's order of checks on storage calls, and its multi-set values, against the real
node (SPEC-NOTES, "How the original answered").

A missing ``Secret-Key`` is 401 before anything else is looked at; then the content type
(400); then the storage lookup (404); then the secret's match (401); then keys, values and
query parameters (400). So a caller without the secret learns nothing but 401 or 404.
"""

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from kv_storage.app import create_app
from kv_storage.config import Config
from tests.conftest import StorageFactory
from tests.helpers import Client, ClientFactory
from tests.waiting import wait_until

LONG_KEY = "k" * 600
"""Over the 512-byte limit of keys."""


@dataclass(frozen=True)
class Case:
    description: str
    method: str
    target: str
    """``{id}``: the storage's id; ``{unknown}``: an id of no storage."""
    secret: str | None
    """``right``, ``wrong`` or ``None`` (no header)."""
    content_type: str | None
    body: bytes | None
    expected: int


CASES = [
    Case(
        "no secret, unknown storage",
        "POST",
        "/get/{unknown}",
        None,
        "application/json",
        b'["a"]',
        401,
    ),
    Case("no secret, bad body", "POST", "/get/{id}", None, "application/json", b"{", 401),
    Case(
        "no secret, wrong content type", "PUT", "/set/{id}/k", None, "application/json", b"v", 401
    ),
    Case("no secret, bad history parameter", "GET", "/history/{id}?page=-1", None, None, None, 401),
    Case("no secret, bad ttl", "PUT", "/storage/{id}?ttl=soon", None, None, None, 401),
    Case(
        "unknown storage, wrong content type",
        "PUT",
        "/set/{unknown}/k",
        "wrong",
        "application/json",
        b"v",
        400,
    ),
    Case(
        "unknown storage, key too long in the body",
        "POST",
        "/get/{unknown}",
        "wrong",
        "application/json",
        b'["' + LONG_KEY.encode() + b'"]',
        404,
    ),
    Case(
        "unknown storage, key too long in the path",
        "GET",
        "/get/{unknown}/" + LONG_KEY,
        "wrong",
        None,
        None,
        404,
    ),
    Case(
        "unknown storage, bad body", "PUT", "/set/{unknown}", "wrong", "application/json", b"[", 404
    ),
    Case(
        "unknown storage, bad history parameter",
        "GET",
        "/history/{unknown}?page=-1",
        "wrong",
        None,
        None,
        404,
    ),
    Case(
        "unknown storage, bad ttl", "PUT", "/storage/{unknown}?ttl=soon", "wrong", None, None, 404
    ),
    Case(
        "wrong secret, key too long", "DELETE", "/delete/{id}/" + LONG_KEY, "wrong", None, None, 401
    ),
    Case("wrong secret, bad body", "POST", "/delete/{id}", "wrong", "application/json", b"{", 401),
    Case(
        "wrong secret, bad history parameter",
        "GET",
        "/history/{id}?page=-1",
        "wrong",
        None,
        None,
        401,
    ),
    Case("wrong secret, bad ttl", "PUT", "/storage/{id}?ttl=soon", "wrong", None, None, 401),
    Case("right secret, key too long", "GET", "/get/{id}/" + LONG_KEY, "right", None, None, 400),
    Case("right secret, bad body", "POST", "/get/{id}", "right", "application/json", b"{", 400),
    Case(
        "right secret, bad history parameter",
        "GET",
        "/history/{id}?page=-1",
        "right",
        None,
        None,
        400,
    ),
    Case("right secret, bad ttl", "PUT", "/storage/{id}?ttl=soon", "right", None, None, 400),
]


@pytest.mark.parametrize("case", CASES, ids=[case.description for case in CASES])
async def test_checks_come_in_the_originals_order(
    api: Client, create_storage: StorageFactory, case: Case
) -> None:
    storage = await create_storage(
        "TEMP" if "/storage/" in case.target else "ACCOUNT",
        history_enabled="/storage/" not in case.target,
    )
    headers: dict[str, str] = {}
    if case.secret is not None:
        headers["Secret-Key"] = storage.secret_key if case.secret == "right" else "not-it"
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    target = case.target.format(id=storage.id, unknown="no-such-storage")
    response = await api.request(case.method, target, data=case.body, headers=headers)
    assert response.status == case.expected, await response.text()
    assert (await response.json())["error"]


async def test_multi_set_takes_numbers_and_booleans_as_the_original_did(
    make_config: Callable[..., Config],
    initialised_config: Config,
    aiohttp_client: ClientFactory,
    create_storage: StorageFactory,
) -> None:
    """Numbers and booleans are stored as their JSON text and answered ``true``; ``null``,
    objects and arrays are invalid pairs: ``false``, not written, no history."""
    config = make_config(KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT="100ms")
    api = await aiohttp_client(create_app(config))
    storage = await create_storage(history_enabled=True)
    body = {
        "a": 5,
        "b": True,
        "c": None,
        "d": "x",
        "e": {"x": 1},
        "f": [1],
        "g": 1.5,
        "h": -12345678901234567890123,
    }
    response = await api.put(f"/set/{storage.id}", json=body, headers=storage.headers)
    assert response.status == 200
    assert await response.json() == {
        "a": True,
        "b": True,
        "c": False,
        "d": True,
        "e": False,
        "f": False,
        "g": True,
        "h": True,
    }
    stored = {
        key: await (await api.get(f"/get/{storage.id}/{key}", headers=storage.headers)).text()
        for key in ("a", "b", "d", "g", "h")
    }
    assert stored == {"a": "5", "b": "true", "d": "x", "g": "1.5", "h": "-12345678901234567890123"}
    for key in ("c", "e", "f"):
        assert (await api.get(f"/get/{storage.id}/{key}", headers=storage.headers)).status == 404

    async def recorded() -> bool:
        answer = await api.get(f"/history/{storage.id}", headers=storage.headers)
        items = (await answer.json())["items"]
        return sorted(item["key"] for item in items) == ["a", "b", "d", "g", "h"]

    await wait_until(recorded, timeout_s=10, what="the history of the written pairs")
