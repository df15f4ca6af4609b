"""The OpenAPI document and the Swagger UI that renders it without internet access."""

import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from kv_storage import create_app
from kv_storage.config import Config

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

UNDOCUMENTED = ("/api/docs", "/static/swagger")


async def test_spec_is_a_valid_openapi_document(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(make_config()))
    response = await client.get("/api/docs/swagger.json")
    assert response.status == 200
    spec = await response.json()
    validate(spec)
    assert spec["info"]["title"] == "kv-storage"
    assert spec["securityDefinitions"]["AdminToken"]["name"] == "Authorization"


async def test_every_route_is_documented_with_its_responses(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory
) -> None:
    app = create_app(make_config())
    client = await aiohttp_client(app)
    spec = await (await client.get("/api/docs/swagger.json")).json()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix", "")
        if route.method == "HEAD" or path.startswith(UNDOCUMENTED):
            continue
        operation = spec["paths"].get(path, {}).get(route.method.lower())
        assert operation is not None, f"{route.method} {path} is not in the spec"
        assert operation["responses"], f"{route.method} {path} documents no responses"
        assert all("description" in answer for answer in operation["responses"].values())
        for parameter in operation.get("parameters", []):
            assert parameter.get("description") or parameter["in"] == "body", (path, parameter)
        if path.startswith("/admin/"):
            assert operation["security"] == [{"AdminToken": []}], f"{route.method} {path}"
            assert {"401", "403", "500"} <= set(operation["responses"]), f"{route.method} {path}"
        elif path not in ("/health", "/history", "/metrics"):  # POST /history: the scroll id
            names = {(p["in"], p["name"]) for p in operation["parameters"]}
            assert ("header", "Secret-Key") in names, f"{route.method} {path}"
            assert {"401", "404", "500"} <= set(operation["responses"]), f"{route.method} {path}"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
async def test_swagger_ui_renders_the_operations_offline(
    make_config: Callable[..., Config], aiohttp_server: ServerFactory, tmp_path: object
) -> None:
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (scripts/setup.sh)")
        pytest.skip("chromium is not installed; run `scripts/setup.sh --test-tools`")
    server = await aiohttp_server(create_app(make_config()))
    url = f"http://127.0.0.1:{server.port}/api/docs"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # No address but the service's resolves: a page that needed the internet would fail.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        f"--user-data-dir={tmp_path}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    process = await _run(command, timeout_s=90)
    dom = process.stdout
    assert 'class="swagger-ui"' in dom, process.stderr[-2000:]
    # Rendered operations, not just the page shell: the UI fetched and drew the spec.
    assert "opblock-summary-path" in dom
    for documented in (
        "/health",
        "/get/{storage_id}/{key}",
        "/set/{storage_id}",
        "/clear/{storage_id}",
    ):
        assert f'data-path="{documented}"' in dom, documented


async def _run(command: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    import asyncio

    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    return subprocess.CompletedProcess(
        command, process.returncode or 0, stdout.decode(), stderr.decode()
    )


def test_every_app_of_a_process_has_the_whole_spec(make_config: Callable[..., Config]) -> None:
    """aiohttp-apispec mutates the handlers' documentation: the second app must not lose any."""
    first = create_app(make_config())["swagger_dict"]
    second = create_app(make_config())["swagger_dict"]
    assert second == first
    validate(second)
