"""TLS to Elasticsearch (a CA file, a pinned fingerprint), credentials over HTTPS, secrets from
files, and the service's own HTTPS listener: real processes against the local node that
serves HTTPS with a file-realm user (``scripts/local-es.sh start --security ... --tls``)."""

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from kv_storage.app import create_app
from kv_storage.config import load_config
from tests.certificates import Certificate, make_ca, make_server_certificate
from tests.conftest import SecuredElasticsearch
from tests.processes import service_process
from tests.waiting import wait_until

pytestmark = pytest.mark.security

KV_STORAGE = [sys.executable, "-m", "kv_storage"]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        KV_STORAGE + args,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def with_colons(fingerprint: str) -> str:
    return ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()


@pytest.fixture
def secured_env(
    secured_es: SecuredElasticsearch, index_prefix: str, tmp_path: Path
) -> dict[str, str]:
    """Basic authentication with the password from a file, as a container secret gives it."""
    password_file = tmp_path / "es-password"
    password_file.write_text(secured_es.password + "\n")
    return {
        "KV_STORAGE_ELASTICSEARCH_URI": secured_es.url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        "KV_STORAGE_ELASTICSEARCH_AUTH_USERNAME": secured_es.username,
        "KV_STORAGE_ELASTICSEARCH_AUTH_PASSWORD_FILE": str(password_file),
    }


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A CA that did not sign the node's certificate."""
    return make_ca(tmp_path_factory.mktemp("other-ca"), "not the node's CA")


async def detailed_health(base: str, session: aiohttp.ClientSession) -> tuple[int, object]:
    async with session.get(f"{base}/health?detailed=true") as answer:
        return answer.status, await answer.json()


def output_of(process: asyncio.subprocess.Process) -> "asyncio.Future[bytes]":
    assert process.stdout is not None
    return asyncio.ensure_future(process.stdout.read())


@pytest.mark.parametrize("trust", ["ca-file", "fingerprint with colons", "plain fingerprint"])
async def test_init_then_serve_over_https(
    secured_es: SecuredElasticsearch,
    secured_env: dict[str, str],
    unused_tcp_port: int,
    trust: str,
) -> None:
    if trust == "ca-file":
        secured_env["KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE"] = secured_es.ca_file
    elif trust == "fingerprint with colons":
        fingerprint = with_colons(secured_es.fingerprint)
        secured_env["KV_STORAGE_ELASTICSEARCH_TLS_FINGERPRINT"] = fingerprint
    else:
        secured_env["KV_STORAGE_ELASTICSEARCH_TLS_FINGERPRINT"] = secured_es.fingerprint
    init = await asyncio.to_thread(run, ["init"], secured_env)
    assert init.returncode == 0, init.stderr
    assert init.stdout.count(" created") == 8
    async with (
        service_process(secured_env, unused_tcp_port) as (process, base),
        aiohttp.ClientSession() as session,
    ):
        status, body = await detailed_health(base, session)
        assert status == 200, body
        output = output_of(process)
    log = (await output).decode()
    assert "start-up check: Elasticsearch at https://127.0.0.1:" in log
    assert secured_es.password not in log + init.stdout + init.stderr


async def test_a_wrong_ca_is_a_tls_problem_naming_the_address(
    secured_es: SecuredElasticsearch,
    secured_env: dict[str, str],
    other_ca: Certificate,
    unused_tcp_port: int,
) -> None:
    secured_env["KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE"] = str(other_ca.cert_file)
    init = await asyncio.to_thread(run, ["init"], secured_env)
    assert init.returncode == 1
    lines = init.stderr.strip().splitlines()
    assert len(lines) == 1, init.stderr
    assert lines[0].startswith(
        f"kv-storage init: TLS problem with Elasticsearch at {secured_es.url}"
    )
    assert "not trusted" in lines[0]
    assert "elasticsearch.tls.ca-file" in lines[0]
    assert secured_es.password not in init.stderr

    # serve starts all the same (Elasticsearch may be fixed later), says so in its log, and
    # its detailed health names the problem.
    async with (
        service_process(secured_env, unused_tcp_port) as (process, base),
        aiohttp.ClientSession() as session,
    ):
        status, body = await detailed_health(base, session)
        output = output_of(process)
    assert status == 500
    assert isinstance(body, dict)
    for check in body["checks"]:
        assert check["status"] == "UNHEALTHY"
        assert check["message"].startswith(f"TLS problem with Elasticsearch at {secured_es.url}")
    log = (await output).decode()
    assert f"start-up check: TLS problem with Elasticsearch at {secured_es.url}" in log
    assert secured_es.password not in log


def test_a_wrong_fingerprint_is_refused(
    secured_es: SecuredElasticsearch, secured_env: dict[str, str]
) -> None:
    wrong = ("0" if secured_es.fingerprint[0] != "0" else "1") + secured_es.fingerprint[1:]
    secured_env["KV_STORAGE_ELASTICSEARCH_TLS_FINGERPRINT"] = wrong
    init = run(["init"], secured_env)
    assert init.returncode == 1
    assert init.stderr.strip() == (
        f"kv-storage init: TLS problem with Elasticsearch at {secured_es.url}: its "
        f"certificate's SHA-256 fingerprint is {secured_es.fingerprint}, not the pinned "
        f"{wrong} (elasticsearch.tls.fingerprint)"
    )


def test_without_a_ca_the_node_is_not_trusted(
    secured_es: SecuredElasticsearch, secured_env: dict[str, str]
) -> None:
    """What a default Elasticsearch 8 install (its own CA) gives a client told nothing."""
    init = run(["init"], secured_env)
    assert init.returncode == 1
    assert "TLS problem with Elasticsearch at" in init.stderr


def test_verify_false_connects_and_warns_every_time(
    secured_es: SecuredElasticsearch, secured_env: dict[str, str]
) -> None:
    secured_env["KV_STORAGE_ELASTICSEARCH_TLS_VERIFY"] = "false"
    for _ in range(2):
        init = run(["init"], secured_env)
        assert init.returncode == 0, init.stderr
        assert "elasticsearch.tls.verify is false" in init.stderr
        assert "is not checked" in init.stderr


def test_verify_false_with_a_ca_file_is_refused(
    secured_es: SecuredElasticsearch, secured_env: dict[str, str]
) -> None:
    secured_env["KV_STORAGE_ELASTICSEARCH_TLS_VERIFY"] = "false"
    secured_env["KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE"] = secured_es.ca_file
    init = run(["init"], secured_env)
    assert init.returncode == 2
    assert init.stderr.startswith("kv-storage: invalid configuration: elasticsearch.tls.verify:")
    assert len(init.stderr.strip().splitlines()) == 1


def test_a_wrong_password_over_https_is_refused(
    secured_es: SecuredElasticsearch, secured_env: dict[str, str], tmp_path: Path
) -> None:
    secured_env["KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE"] = secured_es.ca_file
    (tmp_path / "wrong").write_text("not-the-password")
    secured_env["KV_STORAGE_ELASTICSEARCH_AUTH_PASSWORD_FILE"] = str(tmp_path / "wrong")
    init = run(["init"], secured_env)
    assert init.returncode == 1
    assert "Elasticsearch answered 401" in init.stderr
    assert "not-the-password" not in init.stderr


def test_the_storage_commands_use_tls_and_the_password_file(
    secured_es: SecuredElasticsearch, secured_env: dict[str, str]
) -> None:
    secured_env["KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE"] = secured_es.ca_file
    assert run(["init"], secured_env).returncode == 0
    created = run(["storage", "create", "--type", "TEMP", "--ttl", "60000"], secured_env)
    assert created.returncode == 0, created.stderr
    assert '"type": "TEMP"' in created.stdout


def test_config_masks_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("token-from-a-file-of-32-characters-or-more\n")
    (tmp_path / "key").write_text("key-id:key-secret\n")
    env = {
        "KV_STORAGE_ELASTICSEARCH_URI": "https://127.0.0.1:9200",
        "KV_STORAGE_ADMIN_TOKEN_FILE": str(tmp_path / "token"),
        "KV_STORAGE_ELASTICSEARCH_AUTH_API_KEY_FILE": str(tmp_path / "key"),
    }
    shown = run(["config"], env)
    assert shown.returncode == 0, shown.stderr
    assert 'token = "***"  # KV_STORAGE_ADMIN_TOKEN_FILE' in shown.stdout
    assert 'api-key = "***"  # KV_STORAGE_ELASTICSEARCH_AUTH_API_KEY_FILE' in shown.stdout
    for prop in ("admin.token", "elasticsearch.auth.api-key"):
        assert run(["config", "--get", prop], env).stdout == "***\n"
    assert "token-from-a-file-of-32-characters-or-more" not in shown.stdout + shown.stderr
    assert "key-secret" not in shown.stdout + shown.stderr

    both = run(["config"], {**env, "KV_STORAGE_ADMIN_TOKEN": "x"})
    assert both.returncode == 2
    assert both.stderr.strip() == (
        "kv-storage: invalid configuration: admin.token: both KV_STORAGE_ADMIN_TOKEN and "
        "KV_STORAGE_ADMIN_TOKEN_FILE are set; set only one of them"
    )


# The service's own HTTPS listener ------------------------------------------------------------


@pytest.fixture(scope="module")
def service_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Certificate, Path]:
    """A certificate for 127.0.0.1, and the CA that signed it."""
    folder = tmp_path_factory.mktemp("service-tls")
    ca = make_ca(folder / "ca")
    return make_server_certificate(ca, folder / "server"), ca.cert_file


@asynccontextmanager
async def https_service(
    env: dict[str, str], port: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        *KV_STORAGE,
        "serve",
        env={
            **os.environ,
            **env,
            "KV_STORAGE_SERVER_HOST": "127.0.0.1",
            "KV_STORAGE_SERVER_PORT": str(port),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def test_the_service_answers_https_and_not_plain_http(
    es_url: str,
    index_prefix: str,
    unused_tcp_port: int,
    service_certificate: tuple[Certificate, Path],
) -> None:
    certificate, ca_file = service_certificate
    env = {
        "KV_STORAGE_ELASTICSEARCH_URI": es_url,
        "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
        "KV_STORAGE_SERVER_TLS_CERT_FILE": str(certificate.cert_file),
        "KV_STORAGE_SERVER_TLS_KEY_FILE": str(certificate.key_file),
        "KV_STORAGE_SERVER_HOST": "127.0.0.1",
        "KV_STORAGE_SERVER_PORT": str(unused_tcp_port),
    }
    trusted = ssl.create_default_context(cafile=str(ca_file))
    https = f"https://127.0.0.1:{unused_tcp_port}/health"
    async with https_service(env, unused_tcp_port) as process, aiohttp.ClientSession() as session:

        async def answers() -> bool:
            assert process.returncode is None, "kv-storage serve exited early"
            try:
                async with session.get(https, ssl=trusted) as answer:
                    return answer.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_until(answers, timeout_s=30, what="the service answering over HTTPS")
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{unused_tcp_port}/health") as answer:
                await answer.read()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with session.get(https) as answer:  # the system's CAs do not know ours
                await answer.read()

        healthcheck = await asyncio.to_thread(run, ["healthcheck"], env)
        assert healthcheck.returncode == 0, healthcheck.stderr
        elsewhere = {**env, "KV_STORAGE_SERVER_PORT": str(unused_tcp_port + 1)}
        assert (await asyncio.to_thread(run, ["healthcheck"], elsewhere)).returncode == 1
        output = output_of(process)
    log = (await output).decode()
    assert f"kv-storage listening on https://127.0.0.1:{unused_tcp_port}" in log


@pytest.mark.parametrize(
    ("missing", "given"),
    [("KV_STORAGE_SERVER_TLS_KEY_FILE", "cert"), ("KV_STORAGE_SERVER_TLS_CERT_FILE", "key")],
)
def test_half_a_server_tls_configuration_is_refused(
    service_certificate: tuple[Certificate, Path], missing: str, given: str
) -> None:
    certificate, _ = service_certificate
    env = {
        "KV_STORAGE_ELASTICSEARCH_URI": "http://127.0.0.1:9200",
        "KV_STORAGE_SERVER_TLS_CERT_FILE": str(certificate.cert_file),
        "KV_STORAGE_SERVER_TLS_KEY_FILE": str(certificate.key_file),
    }
    del env[missing]
    result = run(["serve"], env)
    assert result.returncode == 2
    name = "key-file" if given == "cert" else "cert-file"
    assert f"server.tls.{name}: must be set together" in result.stderr


async def test_create_app_health_with_a_pinned_fingerprint(
    secured_es: SecuredElasticsearch,
    secured_env: dict[str, str],
    aiohttp_client: object,
) -> None:
    """In process, the same client the service builds: health through a pinned certificate."""
    secured_env["KV_STORAGE_ELASTICSEARCH_TLS_FINGERPRINT"] = secured_es.fingerprint
    assert (await asyncio.to_thread(run, ["init"], secured_env)).returncode == 0
    config = load_config(environ=secured_env)
    client = await aiohttp_client(create_app(config))  # type: ignore[operator]
    answer = await client.get("/health?detailed=true")
    assert answer.status == 200, await answer.text()
