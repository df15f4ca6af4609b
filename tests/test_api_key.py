"""API keys: what the service and ``init.sh`` send.

Why not against the real node: the test distribution of Elasticsearch cannot create API keys
(``POST /_security/api_key`` answers 400 "Unknown filter type [pattern_capture]": the security
index needs the analysis-common module, which that distribution lacks; see
``shared/ELASTICSEARCH.md``). So these tests check what the client sends, ``Authorization:
ApiKey <base64 of id:key>``, to a small HTTPS endpoint of their own that answers as
Elasticsearch does for the few requests involved. Everything else about Elasticsearch is
tested against the real node.
"""

import asyncio
import base64
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from kv_storage.config import load_config
from kv_storage.es.client import create_client
from tests.certificates import Certificate, make_ca, make_server_certificate

INIT_SH = Path(__file__).parents[1] / "elasticsearch" / "init.sh"
KEY_ID, KEY_SECRET = "VuaCfGcBCdbkQm-e5aOx", "ui2lp2axTNmsyakw9tvNnw"
ENCODED = base64.b64encode(f"{KEY_ID}:{KEY_SECRET}".encode()).decode()


@dataclass
class Endpoint:
    url: str
    ca_file: Path
    authorizations: list[str | None] = field(default_factory=list)


@pytest.fixture(scope="module")
def endpoint_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Certificate, Path]:
    folder = tmp_path_factory.mktemp("endpoint-tls")
    ca = make_ca(folder / "ca")
    return make_server_certificate(ca, folder / "server"), ca.cert_file


@pytest.fixture
async def endpoint(
    endpoint_certificate: tuple[Certificate, Path], unused_tcp_port: int
) -> AsyncIterator[Endpoint]:
    """Answers every request as an empty Elasticsearch node would, as far as creating the
    layout goes: nothing is found (404), every creation succeeds, no index matches."""
    certificate, ca_file = endpoint_certificate
    found = Endpoint(f"https://127.0.0.1:{unused_tcp_port}", ca_file)
    product = {"X-Elastic-Product": "Elasticsearch"}

    async def answer(request: web.Request) -> web.Response:
        found.authorizations.append(request.headers.get("Authorization"))
        if request.path.startswith("/_cat/"):
            return web.Response(text="", headers=product)
        if request.method in ("GET", "HEAD") and "*" not in request.path:
            return web.json_response({}, status=404, headers=product)
        if "/_create/" in request.path:
            return web.json_response({"result": "created"}, status=201, headers=product)
        return web.json_response({}, headers=product)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port, ssl_context=context).start()
    yield found
    await runner.cleanup()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KV_STORAGE_ELASTICSEARCH_AUTH_API_KEY", ENCODED),
        ("KV_STORAGE_ELASTICSEARCH_AUTH_API_KEY", f"{KEY_ID}:{KEY_SECRET}"),
        ("KV_STORAGE_ELASTICSEARCH_AUTH_API_KEY_FILE", "file"),
    ],
)
async def test_the_client_sends_the_api_key(
    endpoint: Endpoint, tmp_path: Path, variable: str, value: str
) -> None:
    if value == "file":
        (tmp_path / "api-key").write_text(f"{ENCODED}\n")
        value = str(tmp_path / "api-key")
    config = load_config(
        environ={
            "KV_STORAGE_ELASTICSEARCH_URI": endpoint.url,
            "KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE": str(endpoint.ca_file),
            variable: value,
        }
    )
    client = create_client(config.elasticsearch, request_timeout_s=10)
    try:
        await client.indices.exists(index="storage-registry")  # whatever the answer: it went
    finally:
        await client.close()
    assert endpoint.authorizations == [f"ApiKey {ENCODED}"]


def init_sh(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INIT_SH), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("key", [ENCODED, f"{KEY_ID}:{KEY_SECRET}"])
async def test_init_sh_sends_the_api_key_read_from_standard_input(
    endpoint: Endpoint, key: str
) -> None:
    result = await asyncio.to_thread(
        init_sh, "-c", str(endpoint.ca_file), "-k", endpoint.url, stdin=f"{key}\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" created") == 8  # five indices, two templates, the key
    assert set(endpoint.authorizations) == {f"ApiKey {ENCODED}"}
    assert KEY_SECRET not in result.stdout + result.stderr


async def test_init_sh_without_the_ca_names_tls(endpoint: Endpoint) -> None:
    result = await asyncio.to_thread(init_sh, "-k", endpoint.url, stdin=ENCODED)
    assert result.returncode == 1
    assert f"TLS problem with Elasticsearch at {endpoint.url}" in result.stderr
    assert endpoint.authorizations == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-k", "-u", "a:b"), "give -k or -u/-i, not both"),
        (("-c", "/nonexistent/ca.crt"), "-c: cannot read /nonexistent/ca.crt"),
    ],
)
def test_init_sh_usage_errors(args: tuple[str, ...], message: str) -> None:
    result = init_sh(*args, "https://127.0.0.1:9", stdin="")
    assert result.returncode == 2
    assert message in result.stderr


def test_init_sh_ca_only_for_https() -> None:
    result = init_sh("-c", sys.executable, "http://127.0.0.1:9", stdin="")
    assert result.returncode == 2
    assert "-c applies to https:// URLs only" in result.stderr
