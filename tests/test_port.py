"""``PORT``: the listening port container platforms set, below the file and KV_STORAGE_*."""

import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from kv_storage.config import ConfigError, load_config
from tests.processes import service_process

URI = {"KV_STORAGE_ELASTICSEARCH_URI": "http://localhost:9200"}


def _file(tmp_path: Path, port: int | None) -> Path:
    path = tmp_path / "kv-storage.toml"
    path.write_text(f"[server]\nport = {port}\n" if port is not None else "[app]\n")
    return path


@pytest.mark.parametrize(
    ("port_env", "file_port", "server_port_env", "expected"),
    [
        (None, None, None, 8080),  # nothing: the default
        ("9191", None, None, 9191),  # PORT alone
        ("", None, None, 8080),  # an empty PORT is no PORT
        ("9191", 7001, None, 7001),  # the file wins over PORT
        ("9191", None, "7002", 7002),  # KV_STORAGE_SERVER_PORT wins over PORT
        ("9191", 7001, "7002", 7002),  # ... and over the file
        (None, 7001, None, 7001),
    ],
)
def test_port_precedence(
    tmp_path: Path,
    port_env: str | None,
    file_port: int | None,
    server_port_env: str | None,
    expected: int,
) -> None:
    environ = dict(URI)
    if port_env is not None:
        environ["PORT"] = port_env
    if server_port_env is not None:
        environ["KV_STORAGE_SERVER_PORT"] = server_port_env
    config = load_config(_file(tmp_path, file_port), environ=environ)
    assert config.server.port == expected


def test_a_bad_port_names_where_it_came_from() -> None:
    with pytest.raises(
        ConfigError, match=r"server\.port: expected an integer, got 'x' \(from PORT\)"
    ):
        load_config(environ={**URI, "PORT": "x"})
    with pytest.raises(ConfigError, match=r"server\.port: must be between 0 and 65535"):
        load_config(environ={**URI, "PORT": "70000"})
    # A bad PORT that KV_STORAGE_SERVER_PORT overrides is never used, so it is no error.
    config = load_config(environ={**URI, "PORT": "x", "KV_STORAGE_SERVER_PORT": "7000"})
    assert config.server.port == 7000


def _config_command(environ: dict[str, str], *args: str) -> str:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("KV_STORAGE_")}
    inherited.pop("PORT", None)
    result = subprocess.run(
        [sys.executable, "-m", "kv_storage", "config", *args],
        env={**inherited, **environ},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("environ", "line"),
    [
        ({}, "port = 8080  # default"),
        ({"PORT": "9191"}, 'port = "9191"  # PORT'),
        (
            {"PORT": "9191", "KV_STORAGE_SERVER_PORT": "7002"},
            'port = "7002"  # KV_STORAGE_SERVER_PORT',
        ),
    ],
)
def test_config_shows_where_the_port_came_from(environ: dict[str, str], line: str) -> None:
    assert line in _config_command({**URI, **environ}).splitlines()


def test_config_names_the_file_a_port_came_from(tmp_path: Path) -> None:
    path = _file(tmp_path, 7001)
    shown = _config_command({**URI, "PORT": "9191"}, "--config", str(path)).splitlines()
    assert f"port = 7001  # file {path}" in shown
    assert 'uri = "http://localhost:9200"  # KV_STORAGE_ELASTICSEARCH_URI' in shown


async def test_serve_listens_on_port_when_nothing_else_sets_it(
    es_url: str, index_prefix: str, unused_tcp_port: int
) -> None:
    """``PORT=<p> kv-storage serve``, as a container platform starts it, listens on p."""
    environ = {
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
    }
    async with (
        service_process(environ, unused_tcp_port, port_variable="PORT") as (_, base),
        aiohttp.ClientSession() as session,
        session.get(f"{base}/health") as answer,
    ):
        assert base.endswith(f":{unused_tcp_port}")
        assert answer.status == 200
