"""The Dockerfile and docker-compose.yml: read, and the image built and run with Podman.

There is no Docker engine here; Podman and Buildah build and run the image as Docker would
(see scripts/containers.sh), on a stand-in for python:3.12-slim built from Debian's mirror.
The running container is checked against the local secured node (HTTPS, a file-realm user),
with its CA and password given as mounted files.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
import yaml

from kv_storage.cli import build_parser
from kv_storage.config import CONFIG_PATH_ENV, PROPERTIES
from kv_storage.config.secrets import file_variable
from tests.conftest import SecuredElasticsearch
from tests.containers import build, container, podman
from tests.waiting import wait_until

ROOT = Path(__file__).parents[1]
KNOWN_VARIABLES = (
    {prop.env_var for prop in PROPERTIES}
    | {file_variable(prop) for prop in PROPERTIES if prop.secret}
    | {CONFIG_PATH_ENV}
)


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _compose(name: str = "docker-compose.yml") -> dict[str, object]:
    document = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(document, dict)
    return document


def test_image_runs_a_valid_kv_storage_command() -> None:
    commands = [json.loads(arg) for kind, arg in _instructions() if kind == "CMD"]
    assert commands, "the Dockerfile has no CMD"
    command = commands[-1]
    assert command[0] == "kv-storage"
    assert build_parser().parse_args(command[1:]).command == "serve"


def test_dockerfile_runs_as_non_root_on_8080_with_a_healthcheck() -> None:
    instructions = _instructions()
    final_stage = instructions[
        max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM") :
    ]
    users = [arg for kind, arg in final_stage if kind == "USER"]
    assert users, "the final stage runs as root"
    assert users[-1] not in ("root", "0")
    assert ("EXPOSE", "8080") in final_stage
    assert ("HEALTHCHECK", "") not in final_stage
    assert any(
        kind == "HEALTHCHECK" and 'CMD ["kv-storage", "healthcheck"]' in arg
        for kind, arg in final_stage
    )
    # The base image is a build argument (the tests substitute a stand-in), python:3.12-slim
    # unless given.
    assert final_stage[0][1] == "${BASE_IMAGE}"
    assert ("ARG", "BASE_IMAGE=python:3.12-slim") in instructions


@pytest.mark.parametrize("compose_file", ["docker-compose.yml", "docker-compose.secure.yml"])
def test_compose_sets_only_properties_the_loader_knows(compose_file: str) -> None:
    services = _compose(compose_file)["services"]
    assert isinstance(services, dict)
    seen = set()
    for service in services.values():
        for name in service.get("environment", {}):
            if name.startswith("KV_STORAGE_"):
                assert name in KNOWN_VARIABLES, f"{name} is not a configuration property"
                seen.add(name)
    assert "KV_STORAGE_ELASTICSEARCH_URI" in seen


def test_compose_initialises_before_serving() -> None:
    services = _compose()["services"]
    assert isinstance(services, dict)
    assert (
        "docker.elastic.co/elasticsearch/elasticsearch:8.19" in services["elasticsearch"]["image"]
    )
    init, service = services["init"], services["kv-storage"]
    assert build_parser().parse_args(init["command"][1:]).command == "init"
    assert build_parser().parse_args(service["command"][1:]).command == "serve"
    assert init["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
    assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert any(port.endswith(":8080") for port in service["ports"])


@pytest.mark.parametrize("path", ["kv_storage", "pipeline", "schemas", "elasticsearch"])
def test_image_contains_what_the_package_needs(path: str) -> None:
    copied = [
        arg.split()[0] for kind, arg in _instructions() if kind == "COPY" and "--from" not in arg
    ]
    assert path in copied


# The image, built and run ----------------------------------------------------------------------


def _image_config(image: str) -> dict[str, object]:
    """The image's configuration; Podman shows the healthcheck beside it, not in it."""
    answer = json.loads(podman("image", "inspect", image).stdout)[0]
    config = dict(answer["Config"])
    config.setdefault("Healthcheck", answer.get("Healthcheck"))
    return config


@pytest.mark.container
@pytest.mark.timeout(1500)
def test_image_sets_only_known_variables() -> None:
    """The built image's environment (base image included), not just the Dockerfile's lines."""
    environment = _image_config(build("image"))["Env"]
    assert isinstance(environment, list)
    names = {entry.split("=", 1)[0] for entry in environment}
    assert {"PYTHONUNBUFFERED", "PATH"} <= names  # what the image sets is really read here
    unknown = {name for name in names if name.startswith("KV_STORAGE")} - KNOWN_VARIABLES
    assert not unknown


@pytest.mark.container
@pytest.mark.timeout(1500)
def test_image_keeps_its_healthcheck_and_user() -> None:
    config = _image_config(build("image"))
    assert config["User"] == "kvstorage"
    healthcheck = config.get("Healthcheck")
    assert isinstance(healthcheck, dict), config  # --format docker keeps it
    assert healthcheck["Test"] == ["CMD", "kv-storage", "healthcheck"]


def _readable_copy(source: Path, folder: Path, name: str) -> Path:
    """A copy the container's unprivileged user can read through a bind mount."""
    copy = folder / name
    copy.write_bytes(source.read_bytes())
    copy.chmod(0o644)
    return copy


@pytest.mark.container
@pytest.mark.security
@pytest.mark.timeout(1500)
async def test_image_initialises_and_serves_against_a_secured_node(
    secured_es: SecuredElasticsearch,
    index_prefix: str,
    tmp_path: Path,
    unused_tcp_port: int,
) -> None:
    image = await asyncio.to_thread(build, "image")
    password = tmp_path / "es-password"
    password.write_text(secured_es.password + "\n")
    password.chmod(0o644)
    ca_file = _readable_copy(Path(secured_es.ca_file), tmp_path, "ca.crt")
    admin_token = tmp_path / "admin-token"
    admin_token.write_text("an-admin-token-for-the-container-of-32-characters\n")
    admin_token.chmod(0o644)
    # Secrets as mounted files, as an orchestrator hands them over; host networking reaches
    # the local node on 127.0.0.1. The port is not 8080: the HEALTHCHECK must follow it.
    run_args = [
        "--network", "host",
        "-v", f"{password}:/run/secrets/es-password:ro",
        "-v", f"{admin_token}:/run/secrets/admin-token:ro",
        "-v", f"{ca_file}:/etc/kv-storage/es-ca.crt:ro",
        "-e", f"KV_STORAGE_ELASTICSEARCH_URI={secured_es.url}",
        "-e", "KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE=/etc/kv-storage/es-ca.crt",
        "-e", f"KV_STORAGE_ELASTICSEARCH_AUTH_USERNAME={secured_es.username}",
        "-e", "KV_STORAGE_ELASTICSEARCH_AUTH_PASSWORD_FILE=/run/secrets/es-password",
        "-e", "KV_STORAGE_ADMIN_TOKEN_FILE=/run/secrets/admin-token",
        "-e", f"KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX={index_prefix}",
        "-e", "KV_STORAGE_SERVER_HOST=127.0.0.1",
        "-e", f"KV_STORAGE_SERVER_PORT={unused_tcp_port}",
    ]  # fmt: skip
    init = await asyncio.to_thread(
        podman, "run", "--rm", *run_args, image, "kv-storage", "init", timeout_s=180, check=False
    )
    assert init.returncode == 0, init.stderr
    assert init.stdout.count(" created") == 8, init.stdout

    base = f"http://127.0.0.1:{unused_tcp_port}"
    with container(image, *run_args) as name:
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                try:
                    async with session.get(f"{base}/health?detailed=true") as answer:
                        return answer.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(healthy, timeout_s=90, what="the container's detailed health 200")

        state = json.loads((await asyncio.to_thread(podman, "inspect", name)).stdout)[0]["State"]
        status = await asyncio.to_thread(Path(f"/proc/{state['Pid']}/status").read_text)
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["10001"] * 4, uid_line  # real, effective, saved, fs

        check = await asyncio.to_thread(podman, "healthcheck", "run", name, check=False)
        assert check.returncode == 0, check.stdout + check.stderr

        grace_s = 30
        began = time.monotonic()
        await asyncio.to_thread(
            podman, "stop", "--time", str(grace_s), name, timeout_s=grace_s + 30
        )
        took = time.monotonic() - began
        state = json.loads((await asyncio.to_thread(podman, "inspect", name)).stdout)[0]["State"]
        logs = await asyncio.to_thread(podman, "logs", name)
    assert state["ExitCode"] == 0, logs.stdout + logs.stderr
    assert took < grace_s, f"SIGTERM took {took:.1f} s: the container was killed"
    log_text = logs.stdout + logs.stderr
    assert "history: shutdown flush" in log_text
    assert "Traceback" not in log_text
    assert f"kv-storage listening on http://127.0.0.1:{unused_tcp_port}" in log_text
    for secret in (secured_es.password, "an-admin-token-for-the-container-of-32-characters"):
        assert secret not in log_text + init.stdout + init.stderr


@pytest.mark.container
@pytest.mark.timeout(1500)
def test_image_healthcheck_fails_when_nothing_answers(es_url: str, unused_tcp_port: int) -> None:
    """The healthcheck asks the configured port: a service on another port is not healthy."""
    image = build("image")
    result = podman(
        "run", "--rm", "--network", "host",
        "-e", f"KV_STORAGE_ELASTICSEARCH_URI={es_url}",
        "-e", f"KV_STORAGE_SERVER_PORT={unused_tcp_port}",
        image, "kv-storage", "healthcheck",
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"http://127.0.0.1:{unused_tcp_port}/health" in result.stderr


# The compose files, run with podman-compose -------------------------------------------------


def _compose_command(
    project: str, *args: str, compose_file: str = "docker-compose.yml"
) -> list[str]:
    podman_compose = str(Path(sys.executable).parent / "podman-compose")
    return [podman_compose, "-f", str(ROOT / compose_file), "-p", project, *args]


@contextmanager
def _compose_up(compose_file: str, port: int, **environment: str) -> Iterator[str]:
    """``podman-compose up -d --no-deps`` of ``compose_file`` with our images; down -v after.

    ``--no-deps``: Podman 4.3 (Debian 12) refuses to start a container whose ``--requires``
    chain is longer than one link ("generating dependency graph ... not found in input
    list"), and podman-compose ignores ``service_healthy`` before Podman 4.6. So every
    service starts at once here, and ``kv-storage init --wait`` does the waiting that the
    health-check conditions do under Docker Compose.
    """
    project = f"kvtest{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "ELASTICSEARCH_IMAGE": build("es-image"),
        "KV_STORAGE_IMAGE": build("image"),
        "KV_STORAGE_PORT": str(port),
        **environment,
    }
    up = subprocess.run(
        _compose_command(project, "up", "-d", "--no-deps", compose_file=compose_file),
        env=env, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield project
    finally:
        subprocess.run(
            _compose_command(project, "down", "-v", "-t", "20", compose_file=compose_file),
            env=env, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
        )  # fmt: skip


async def _wait_for_detailed_health(port: int, timeout_s: float) -> dict[str, object]:
    body: dict[str, object] = {}
    async with aiohttp.ClientSession() as session:

        async def healthy() -> bool:
            nonlocal body
            try:
                async with session.get(f"http://127.0.0.1:{port}/health?detailed=true") as answer:
                    body = await answer.json() if answer.status in (200, 500) else {}
                    return answer.status == 200
            except (aiohttp.ClientError, ValueError):
                return False

        await wait_until(healthy, timeout_s=timeout_s, interval_s=1, what="compose's service")
    return body


@pytest.mark.container
@pytest.mark.timeout(1800)
async def test_compose_quick_start_runs_under_podman_compose(unused_tcp_port: int) -> None:
    await asyncio.to_thread(build, "image")
    await asyncio.to_thread(build, "es-image")
    with _compose_up("docker-compose.yml", unused_tcp_port) as project:
        body = await _wait_for_detailed_health(unused_tcp_port, timeout_s=300)
        assert body["status"] == "HEALTHY"
        # Detailed health turns HEALTHY once init has made the templates, which may be before
        # init has printed its report (it prints at its end): wait for init to exit, then ask
        # for its log until Podman has written it out (it was once read empty under load).
        waited = await asyncio.to_thread(podman, "wait", f"{project}_init_1", timeout_s=120)
        assert waited.stdout.strip() == "0", waited.stdout + waited.stderr

        async def init_reported() -> bool:
            init = await asyncio.to_thread(podman, "logs", f"{project}_init_1")
            return init.stdout.count(" created") == 8

        await wait_until(init_reported, timeout_s=60, interval_s=1, what="init's report")


@pytest.mark.container
@pytest.mark.timeout(1800)
async def test_secured_compose_runs_with_https_and_a_password_file(
    unused_tcp_port: int,
) -> None:
    await asyncio.to_thread(build, "image")
    await asyncio.to_thread(build, "es-image")
    password = f"pw-{uuid.uuid4().hex}"
    with _compose_up(
        "docker-compose.secure.yml", unused_tcp_port, ELASTIC_PASSWORD=password
    ) as project:
        body = await _wait_for_detailed_health(unused_tcp_port, timeout_s=400)
        assert body["status"] == "HEALTHY"
        inspect = await asyncio.to_thread(podman, "inspect", f"{project}_kv-storage_1")
        environment = json.loads(inspect.stdout)[0]["Config"]["Env"]
        assert not any(password in entry for entry in environment)  # a file, not a variable
        logs = await asyncio.to_thread(podman, "logs", f"{project}_kv-storage_1")
    # Started with the others, it may have found Elasticsearch not up yet: only the address.
    assert "Elasticsearch at https://es01:9200" in logs.stdout + logs.stderr
    assert password not in logs.stdout + logs.stderr
