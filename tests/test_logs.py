"""Structured logs and the request id; and no secret in any log line or metric."""

import asyncio
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from kv_storage import logs
from tests.conftest import SecuredElasticsearch, StorageFactory
from tests.helpers import Client, path
from tests.processes import service_process


class Lines(logging.Handler):
    """Log lines as production formats them (with the request-id filter)."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.addFilter(logs._RequestIdFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    handler = Lines(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


async def test_request_id_is_taken_or_made_and_returned(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage()
    given = await api.get(
        path("get", storage, "k"), headers={**storage.headers, "X-Request-ID": "abc-123"}
    )
    assert given.headers["X-Request-ID"] == "abc-123"
    made = await api.get("/no/such/path")
    assert len(made.headers["X-Request-ID"]) == 32
    unsafe = await api.get("/health", headers={"X-Request-ID": "bad id with spaces\tand tabs"})
    assert unsafe.headers["X-Request-ID"] != "bad id with spaces\tand tabs"
    streamed = await api.get(
        path("list", storage), headers={**storage.headers, "X-Request-ID": "list-1"}
    )
    assert streamed.headers["X-Request-ID"] == "list-1"


async def test_log_lines_caused_by_a_request_carry_its_id(
    make_config: object, aiohttp_client: object, unused_tcp_port: int, json_lines: Lines
) -> None:
    from kv_storage.app import create_app

    token = "logs-admin-token-0123456789abcdefgh"
    config = make_config(  # type: ignore[operator]
        KV_STORAGE_ELASTICSEARCH_URI=f"http://127.0.0.1:{unused_tcp_port}",
        KV_STORAGE_ADMIN_TOKEN=token,
    )
    api = await aiohttp_client(create_app(config))  # type: ignore[operator]
    response = await api.get(
        "/admin/storages/some-storage",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-42"},
    )
    assert response.status == 500
    records = [json.loads(line) for line in json_lines.lines]
    caused = [record for record in records if record.get("request_id") == "req-42"]
    loggers = {record["logger"] for record in caused}
    # The error answer's line, and the client's node failure logged inside the lifecycle actor
    # (a storage lookup's registry read is not: it goes in a batch, for many requests).
    assert "kv_storage.middlewares" in loggers
    assert any(name.startswith("elastic_transport") for name in loggers), loggers
    assert all(set(record) >= {"time", "level", "logger", "message"} for record in records)


def test_logfmt_quotes_what_needs_it() -> None:
    record = logging.LogRecord("kv", logging.WARNING, __file__, 1, 'said "hi" there', None, None)
    record.request_id = "r1"
    line = logs.LogfmtFormatter().format(record)
    assert line.endswith('level=warning logger=kv message="said \\"hi\\" there" request_id=r1')


async def test_no_secret_in_logs_or_metrics(
    secured_es: SecuredElasticsearch, index_prefix: str, unused_tcp_port: int, tmp_path: Path
) -> None:
    """A real process with every secret configured, driven through a scenario that uses each.

    The Elasticsearch password and the admin token come from files (``_FILE`` variables), as
    container secrets do.
    """
    admin_token = "admin-token-that-must-never-be-logged"
    (tmp_path / "password").write_text(secured_es.password + "\n")
    (tmp_path / "admin-token").write_text(admin_token + "\n")
    environ = {
        **os.environ,
        "KV_STORAGE_ELASTICSEARCH_URI": secured_es.url,
        "KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE": secured_es.ca_file,
        "KV_STORAGE_ELASTICSEARCH_AUTH_USERNAME": secured_es.username,
        "KV_STORAGE_ELASTICSEARCH_AUTH_PASSWORD_FILE": str(tmp_path / "password"),
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        "KV_STORAGE_ADMIN_TOKEN_FILE": str(tmp_path / "admin-token"),
        "KV_STORAGE_SERVER_ACCESS_LOG": "true",
        "KV_STORAGE_APP_HISTORY_FLUSH_TIMEOUT": "100ms",
    }
    init = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kv_storage",
        "init",
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    init_output, _ = await init.communicate()
    assert init.returncode == 0, init_output
    secrets = [admin_token, secured_es.password]
    async with (
        service_process(environ, unused_tcp_port) as (process, base),
        aiohttp.ClientSession() as session,
    ):
        admin = {"Authorization": f"Bearer {admin_token}"}
        async with session.post(
            f"{base}/admin/storages",
            headers=admin,
            json={"type": "ACCOUNT", "account": "a", "name": "n", "historyEnabled": True},
        ) as answer:
            created = await answer.json()
        storage_id, secret = created["id"], created["secretKey"]
        secrets.append(secret)
        headers = {"Secret-Key": secret}
        async with session.put(
            f"{base}/set/{storage_id}/private-key-name",
            data="v",
            headers={**headers, "Content-Type": "text/plain"},
        ) as answer:
            assert answer.status == 200
        async with session.get(
            f"{base}/get/{storage_id}/k", headers={"Secret-Key": secret + "-wrong"}
        ) as answer:
            assert answer.status == 401
        async with session.get(
            f"{base}/admin/storages/{storage_id}",
            headers={"Authorization": "Bearer " + admin_token + "x"},
        ) as answer:
            assert answer.status == 401
        async with session.post(
            f"{base}/admin/storages/{storage_id}/secret-key", headers=admin
        ) as answer:
            secrets.append((await answer.json())["secretKey"])
        async with session.get(f"{base}/history/{storage_id}", headers=headers) as answer:
            assert answer.status == 401  # the rotated secret is the old one now
        async with session.get(f"{base}/health?detailed=true") as answer:
            assert answer.status == 200
        async with session.get(f"{base}/metrics") as answer:
            metrics_text = await answer.text()
    assert process.stdout is not None
    log_text = (await process.stdout.read()).decode()
    assert '"logger": "aiohttp.access"' in log_text  # the access log was on
    assert "PUT /set/{storage_id}/{key}" in log_text  # routes, not paths with ids and keys
    assert "private-key-name" not in log_text
    for secret in secrets:
        assert secret not in log_text
        assert secret not in metrics_text
