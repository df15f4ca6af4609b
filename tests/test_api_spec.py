"""The OpenAPI document and the Swagger UI that renders it without internet access."""

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from kv_storage.app import create_app
from kv_storage.config import Config
from kv_storage.validation import route_validation
from tests.helpers import ClientFactory, ServerFactory

ROOT = Path(__file__).parents[1]


UNDOCUMENTED = ("/api/docs",)


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


async def test_the_openapi_3_document_describes_every_operation_as_clients_need(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory
) -> None:
    """What client generators read: valid 3.0.3, an operationId each, bodies with their media
    types, the headers of answers, both security schemes."""
    client = await aiohttp_client(create_app(make_config()))
    response = await client.get("/api/docs/openapi.json")
    assert response.status == 200
    spec = await response.json()
    validate(spec)
    assert spec["openapi"] == "3.0.3"
    swagger = await (await client.get("/api/docs/swagger.json")).json()
    operations = [op for ops in spec["paths"].values() for op in ops.values()]
    assert len(operations) == sum(len(ops) for ops in swagger["paths"].values())
    ids = [op["operationId"] for op in operations]
    assert len(set(ids)) == len(ids)
    assert "set_value" in ids
    set_value = spec["paths"]["/set/{storage_id}/{key}"]["put"]
    assert list(set_value["requestBody"]["content"]) == ["text/plain"]
    assert "ETag" in set_value["responses"]["200"]["headers"]
    set_values = spec["paths"]["/set/{storage_id}"]["put"]
    assert list(set_values["requestBody"]["content"]) == ["application/json"]
    get_value = spec["paths"]["/get/{storage_id}/{key}"]["get"]
    assert list(get_value["responses"]["200"]["content"]) == ["text/plain"]
    assert get_value["security"] == [{"SecretKey": []}]
    listed = spec["paths"]["/list/{storage_id}"]["get"]["responses"]
    assert "Link" in listed["200"].get("headers", {})
    busy = [
        answer
        for op in operations
        for status, answer in op["responses"].items()
        if status in ("429", "503")
    ]
    assert busy
    assert all("Retry-After" in answer.get("headers", {}) for answer in busy)
    schemes = spec["components"]["securitySchemes"]
    assert schemes["AdminToken"] == {**schemes["AdminToken"], "type": "http", "scheme": "bearer"}
    assert schemes["SecretKey"]["name"] == "Secret-Key"
    assert "#/definitions/" not in str(spec)
    start = (ROOT / "kv_storage" / "static" / "docs" / "start.js").read_text()
    assert 'url: "/api/docs/openapi.json"' in start  # the UI shows the 3.0 document


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


def _chromium_or_skip() -> str:
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (scripts/setup.sh)")
        pytest.skip("chromium is not installed; run `scripts/setup.sh --test-tools`")
    return chromium


async def _rendered_dom(
    chromium: str, url: str, profile: object
) -> subprocess.CompletedProcess[str]:
    """The page's DOM after Chromium ran its scripts, with no address but loopback reachable."""
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
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    return await _run(command, timeout_s=90)


_DOCUMENTED = ("/health", "/get/{storage_id}/{key}", "/set/{storage_id}", "/clear/{storage_id}")


@pytest.mark.browser
async def test_swagger_ui_renders_the_operations_offline(
    make_config: Callable[..., Config], aiohttp_server: ServerFactory, tmp_path: object
) -> None:
    """Rendered under its own Content-Security-Policy (scripts and styles of the service
    only), from the vendored, current Swagger UI."""
    chromium = _chromium_or_skip()
    server = await aiohttp_server(create_app(make_config()))
    process = await _rendered_dom(chromium, f"http://127.0.0.1:{server.port}/api/docs", tmp_path)
    dom = process.stdout
    assert 'class="swagger-ui"' in dom, process.stderr[-2000:]
    # Rendered operations, not just the page shell: the UI fetched and drew the spec.
    assert "opblock-summary-path" in dom
    for documented in _DOCUMENTED:
        assert f'data-path="{documented}"' in dom, documented


@pytest.mark.browser
async def test_swagger_ui_ignores_a_spec_named_in_its_address(
    make_config: Callable[..., Config], aiohttp_server: ServerFactory, tmp_path: object
) -> None:
    """CVE-2021-46708: ``/api/docs?url=<attacker's spec>`` (or ``configUrl``) made the bundled
    Swagger UI 4.1.0 render a foreign document whose server is the attacker's, inviting users
    to type the admin token into it. The page must draw this service's document, and never
    even fetch the other one."""
    chromium = _chromium_or_skip()
    fetched: list[str] = []
    evil_spec = {
        "swagger": "2.0",
        "info": {"title": "evil", "version": "1"},
        "host": "attacker.example",
        "paths": {"/steal-the-token": {"get": {"responses": {"200": {"description": "x"}}}}},
    }

    async def evil(request: web.Request) -> web.Response:
        fetched.append(request.path)
        if request.path.endswith("config.json"):
            return web.json_response({"url": str(request.url.with_path("/evil.json"))})
        return web.json_response(evil_spec, headers={"Access-Control-Allow-Origin": "*"})

    attacker = web.Application()
    attacker.router.add_get("/{name}", evil)
    attacker_server = await aiohttp_server(attacker)
    server = await aiohttp_server(create_app(make_config()))
    foreign = f"http://127.0.0.1:{attacker_server.port}"
    for query in (f"url={foreign}/evil.json", f"configUrl={foreign}/config.json"):
        url = f"http://127.0.0.1:{server.port}/api/docs?{query}"
        process = await _rendered_dom(chromium, url, tmp_path)
        dom = process.stdout
        assert "opblock-summary-path" in dom, process.stderr[-2000:]
        assert "steal-the-token" not in dom
        for documented in _DOCUMENTED:
            assert f'data-path="{documented}"' in dom, documented
    assert fetched == []


async def test_docs_pages_carry_their_policy_and_cannot_be_framed(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(make_config()))
    for target in (
        "/api/docs",
        "/api/docs/static/swagger-ui/swagger-ui-bundle.js",
        "/api/docs/static/docs/start.js",
    ):
        response = await client.get(target)
        assert response.status == 200, target
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy, target
        assert "frame-ancestors 'none'" in policy, target
        assert "connect-src 'self'" in policy, target
        assert response.headers["X-Frame-Options"] == "DENY", target
    page = await (await client.get("/api/docs")).text()
    assert "<script>" not in page  # no inline script: the policy allows none
    start = await (await client.get("/api/docs/static/docs/start.js")).text()
    assert "queryConfigEnabled: false" in start


def test_the_vendored_swagger_ui_is_past_the_query_string_fix() -> None:
    """CVE-2021-46708 was fixed in Swagger UI 4.1.3; the bundle records its version."""
    version_file = ROOT / "kv_storage" / "static" / "swagger-ui" / "VERSION"
    name, version = version_file.read_text().splitlines()[0].split()
    assert name == "swagger-ui-dist"
    assert tuple(int(part) for part in version.split(".")) >= (4, 1, 3)
    assert (version_file.parent / "LICENSE").is_file()


async def test_docs_can_be_switched_off(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(make_config(KV_STORAGE_APP_DOCS_ENABLED="false")))
    for target in (
        "/api/docs",
        "/api/docs/swagger.json",
        "/api/docs/static/swagger-ui/swagger-ui-bundle.js",
    ):
        assert (await client.get(target)).status == 404, target
    assert (await client.get("/health")).status == 200


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


async def test_what_the_validation_checks_is_what_the_spec_documents(
    make_config: Callable[..., Config], aiohttp_client: ClientFactory
) -> None:
    """One declaration each: a route's content type is its ``consumes`` (the one the request
    validation checks), and every route with a body declares one; the condition headers are
    parameters made from their schemas."""
    app = create_app(make_config())
    client = await aiohttp_client(app)
    spec = await (await client.get("/api/docs/swagger.json")).json()
    for route in app.router.routes():
        validation = route_validation(route.handler, storage_route=False)
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        operation = spec["paths"].get(path, {}).get(route.method.lower())
        if operation is None:
            continue
        declared = validation.content_type if validation is not None else None
        assert operation.get("consumes", [None]) == [declared], f"{route.method} {path}"
        bodies = {p["name"] for p in operation.get("parameters", []) if p["in"] == "body"}
        if bodies:
            assert declared is not None, f"{route.method} {path} takes a body of no type"
    assert spec["paths"]["/set/{storage_id}/{key}"]["put"]["consumes"] == ["text/plain"]
    headers = {
        (path, method): {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    }
    assert {"If-Match", "If-None-Match"} <= set(headers["/set/{storage_id}/{key}", "put"])
    assert "If-Match" in headers["/delete/{storage_id}/{key}", "delete"]
    get_tag = headers["/get/{storage_id}/{key}", "get"]["If-None-Match"]
    assert get_tag == {
        "in": "header",
        "name": "If-None-Match",
        "required": False,
        "type": "string",
        "description": "A version (an ETag): 304 while the key is at it; with `wait`, wait for "
        "a change",
    }
