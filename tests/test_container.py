"""The Dockerfile and docker-compose.yml, checked by reading them (no Docker engine here)."""

import json
import re
from pathlib import Path

import pytest
import yaml

from kv_storage.cli import build_parser
from kv_storage.config import CONFIG_PATH_ENV, PROPERTIES

ROOT = Path(__file__).parents[1]
KNOWN_VARIABLES = {prop.env_var for prop in PROPERTIES} | {CONFIG_PATH_ENV}


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _compose() -> dict[str, object]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def test_image_runs_a_valid_kv_storage_command() -> None:
    commands = [json.loads(arg) for kind, arg in _instructions() if kind == "CMD"]
    assert commands, "the Dockerfile has no CMD"
    command = commands[-1]
    assert command[0] == "kv-storage"
    assert build_parser().parse_args(command[1:]).command == "serve"


def test_image_runs_as_non_root_on_8080_with_a_healthcheck() -> None:
    instructions = _instructions()
    final_stage = instructions[
        max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM") :
    ]
    users = [arg for kind, arg in final_stage if kind == "USER"]
    assert users, "the final stage runs as root"
    assert users[-1] not in ("root", "0")
    assert ("EXPOSE", "8080") in final_stage
    assert any(kind == "HEALTHCHECK" and "/health" in arg for kind, arg in final_stage)
    base = final_stage[0][1]
    assert re.match(r"python:3\.1[1-9]-slim", base), base


def test_image_sets_only_known_variables() -> None:
    for kind, arg in _instructions():
        if kind == "ENV":
            for name in re.findall(r"(KV_STORAGE_\w+)=", arg):
                assert name in KNOWN_VARIABLES, name


def test_compose_sets_only_properties_the_loader_knows() -> None:
    services = _compose()["services"]
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
    assert services["elasticsearch"]["image"].startswith(
        "docker.elastic.co/elasticsearch/elasticsearch:8.19"
    )
    init, service = services["init"], services["kv-storage"]
    assert build_parser().parse_args(init["command"][1:]).command == "init"
    assert build_parser().parse_args(service["command"][1:]).command == "serve"
    assert init["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
    assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert "8080:8080" in service["ports"]


@pytest.mark.parametrize("path", ["kv_storage", "pipeline", "schemas", "elasticsearch"])
def test_image_contains_what_the_package_needs(path: str) -> None:
    copied = [
        arg.split()[0] for kind, arg in _instructions() if kind == "COPY" and "--from" not in arg
    ]
    assert path in copied
