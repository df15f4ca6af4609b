"""The ``kv-storage`` command as operators run it: real processes against a real node."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from elasticsearch import AsyncElasticsearch

from kv_storage.es.names import IndexNames

KV_STORAGE = [sys.executable, "-m", "kv_storage"]


def run(
    args: list[str], env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        KV_STORAGE + args,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.fixture
def service_env(es_url: str, index_prefix: str, unused_tcp_port: int) -> dict[str, str]:
    return {
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        "KV_STORAGE_SERVER_HOST": "127.0.0.1",
        "KV_STORAGE_SERVER_PORT": str(unused_tcp_port),
    }


@asynccontextmanager
async def serving(env: dict[str, str]) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A real ``kv-storage serve`` process, once it answers /health."""
    process = await asyncio.create_subprocess_exec(
        *KV_STORAGE,
        "serve",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{env['KV_STORAGE_SERVER_PORT']}"
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession() as session:
            while process.returncode is None:
                try:
                    async with session.get(f"{base}/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)  # polling for the port, under the deadline above
        assert process.returncode is None, "kv-storage serve exited early"
        yield process, base
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@pytest.mark.parametrize(
    ("variable", "value", "property_name"),
    [
        ("KV_STORAGE_APP_HISTORY_FLUSH_SIZE", "-3", "app.history.flush-size"),
        ("KV_STORAGE_ELASTICSEARCH_URI", "elasticsearch//nohost", "elasticsearch.uri"),
    ],
)
def test_serve_with_an_invalid_property_exits_with_one_line(
    service_env: dict[str, str], variable: str, value: str, property_name: str
) -> None:
    result = run(["serve"], {**service_env, variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert property_name in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_reported(service_env: dict[str, str], tmp_path: object) -> None:
    result = run(["serve", "--config", "/nonexistent/kv-storage.toml"], service_env)
    assert result.returncode == 2
    assert "/nonexistent/kv-storage.toml: not found" in result.stderr


def test_init_creates_then_reports_existing(service_env: dict[str, str], index_prefix: str) -> None:
    first = run(["init"], service_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"index {index_prefix}storage-registry-lock created",
        f"index {index_prefix}storage-registry created",
        f"index {index_prefix}storage-shared-data created",
        f"index {index_prefix}storage-shared-history created",
        f"index {index_prefix}storage-signing-keys created",
        f"template {index_prefix}storage-data created",
        f"indices {index_prefix}storage-data-* up to date (0 indices)",
        f"template {index_prefix}storage-history created",
        f"indices {index_prefix}storage-history-* up to date (0 indices)",
        "signing key history-scroll created",
        "key field of stored data up to date",  # a new deployment: nothing to migrate
    ]
    second = run(["init"], service_env)
    assert second.returncode == 0, second.stderr
    assert all(" up to date" in line for line in second.stdout.splitlines())
    assert len(second.stdout.splitlines()) == 11


def test_init_against_unreachable_elasticsearch_fails_cleanly(
    service_env: dict[str, str], unused_tcp_port_factory: Callable[[], int]
) -> None:
    port = unused_tcp_port_factory()
    result = run(
        ["init"], {**service_env, "KV_STORAGE_ELASTICSEARCH_URI": f"http://127.0.0.1:{port}"}
    )
    assert result.returncode == 1
    assert "Elasticsearch is unreachable" in result.stderr
    assert "Traceback" not in result.stderr


async def test_init_then_serve_reports_health_and_a_missing_template(
    service_env: dict[str, str], es: AsyncElasticsearch, index_prefix: str
) -> None:
    assert run(["init"], service_env).returncode == 0
    async with serving(service_env) as (_, base), aiohttp.ClientSession() as session:
        async with session.get(f"{base}/health?detailed=true") as response:
            assert response.status == 200
            body = await response.json()
        assert body["status"] == "HEALTHY"
        assert [check["status"] for check in body["checks"]] == ["HEALTHY"] * 3

        await es.indices.delete_index_template(name=IndexNames(index_prefix).data_template)
        async with session.get(f"{base}/health?detailed=true") as response:
            assert response.status == 500
            body = await response.json()
        assert body["status"] == "UNHEALTHY"
        assert body["checks"][1] == {
            "name": "STORAGE_DATA_TEMPLATE",
            "status": "UNHEALTHY",
            "message": "Not found",
        }


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
async def test_serve_shuts_down_gracefully_on_signal(
    service_env: dict[str, str], signal_number: signal.Signals
) -> None:
    async with serving(service_env) as (process, _):
        process.send_signal(signal_number)
        async with asyncio.timeout(20):
            assert await process.wait() == 0
        assert process.stdout is not None
        output = (await process.stdout.read()).decode()
        assert "Traceback" not in output


@pytest.mark.security
def test_init_with_credentials_against_a_secured_node(
    secured_es: object, index_prefix: str
) -> None:
    env = {
        "KV_STORAGE_ELASTICSEARCH_URI": secured_es.url,  # type: ignore[attr-defined]
        "KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE": secured_es.ca_file,  # type: ignore[attr-defined]
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
    }
    refused = run(["init"], env)
    assert refused.returncode == 1
    assert "401" in refused.stderr

    env["KV_STORAGE_ELASTICSEARCH_AUTH_USERNAME"] = secured_es.username  # type: ignore[attr-defined]
    env["KV_STORAGE_ELASTICSEARCH_AUTH_PASSWORD"] = secured_es.password  # type: ignore[attr-defined]
    accepted = run(["init"], env)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.count(" created") == 8
    assert secured_es.password not in accepted.stdout + accepted.stderr  # type: ignore[attr-defined]


def test_init_wait_tries_again_until_its_deadline(
    service_env: dict[str, str], unused_tcp_port_factory: Callable[[], int]
) -> None:
    port = unused_tcp_port_factory()
    env = {**service_env, "KV_STORAGE_ELASTICSEARCH_URI": f"http://127.0.0.1:{port}"}
    began = time.monotonic()
    result = run(["init", "--wait", "3"], env)
    took = time.monotonic() - began
    assert result.returncode == 1
    assert "Elasticsearch is unreachable" in result.stderr
    assert took >= 3


_HOP = ("host", "content-length")


async def test_init_wait_succeeds_once_elasticsearch_answers(
    service_env: dict[str, str], es_url: str, index_prefix: str, aiohttp_server: Callable[..., Any]
) -> None:
    """A stand-in for an Elasticsearch that is starting: 503 twice, then the real node."""
    answered: list[int] = []
    session = aiohttp.ClientSession()

    async def starting(request: web.Request) -> web.Response:
        if len(answered) < 2:
            answered.append(503)
            return web.json_response({}, status=503, headers={"X-Elastic-Product": "Elasticsearch"})
        async with session.request(
            request.method, es_url + request.raw_path, data=await request.read(),
            headers={k: v for k, v in request.headers.items() if k.lower() not in _HOP},
        ) as answer:  # fmt: skip
            answered.append(answer.status)
            return web.Response(
                status=answer.status, body=await answer.read(),
                headers={"X-Elastic-Product": "Elasticsearch",
                         "Content-Type": answer.headers.get("Content-Type", "application/json")},
            )  # fmt: skip

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", starting)
    server = await aiohttp_server(app)
    env = {**service_env, "KV_STORAGE_ELASTICSEARCH_URI": f"http://127.0.0.1:{server.port}"}
    try:
        result = await asyncio.to_thread(run, ["init", "--wait", "60"], env)
    finally:
        await session.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" created") == 8
    assert answered[:2] == [503, 503]


def test_config_prints_toml_that_loads_again(service_env: dict[str, str], tmp_path: Path) -> None:
    token = "t" * 40
    shown = run(["config"], {**service_env, "KV_STORAGE_ADMIN_TOKEN": token})
    assert shown.returncode == 0, shown.stderr
    assert 'token = "***"  # KV_STORAGE_ADMIN_TOKEN' in shown.stdout
    assert "enabled = true  # default" in shown.stdout  # TOML, not Python's True
    assert token not in shown.stdout
    clear = run(["config", "--show-secrets"], {**service_env, "KV_STORAGE_ADMIN_TOKEN": token})
    assert f'token = "{token}"' in clear.stdout
    saved = tmp_path / "saved.toml"
    saved.write_text(clear.stdout)
    only_file = {"KV_STORAGE_CONFIG": str(saved)}
    again = run(["config", "--show-secrets"], only_file)
    assert again.returncode == 0, again.stderr
    assert f'token = "{token}"  # file {saved}' in again.stdout
    assert run(["config", "--get", "admin.token"], {**only_file}).stdout == "***\n"
    got = run(["config", "--get", "admin.token", "--show-secrets"], only_file)
    assert got.stdout == token + "\n"


def test_a_duration_of_a_few_bare_milliseconds_is_warned_of(service_env: dict[str, str]) -> None:
    """KV_STORAGE_APP_REQUEST_TIMEOUT=3 is 3 ms: valid, surely not meant; said at start."""
    result = run(
        ["init", "--wait", "0"],
        {
            **service_env,
            "KV_STORAGE_ELASTICSEARCH_URI": "http://127.0.0.1:9",
            "KV_STORAGE_APP_REQUEST_TIMEOUT": "3",
            "KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT": "500ms",  # with a unit: as meant
        },
    )
    assert "app.request-timeout is 3 ms" in result.stderr
    assert "give the unit (3s, 3 seconds) if seconds were meant" in result.stderr
    assert "flush-timeout" not in result.stderr


def test_storage_commands_take_config_before_or_after_the_action(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "kv.toml"
    config.write_text('[elasticsearch]\nuri = "http://127.0.0.1:9"\n')
    for args in (
        ["storage", "create", "--config", str(config), "--type", "TEMP", "--ttl", "1000"],
        ["storage", "--config", str(config), "create", "--type", "TEMP", "--ttl", "1000"],
        ["storage", "show", "some-id", "--config", str(config)],
    ):
        result = run(args, {})
        assert "unrecognized arguments" not in result.stderr, args
        assert "Elasticsearch is unreachable" in result.stderr, (args, result.stderr)
