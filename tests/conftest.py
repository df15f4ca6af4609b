"""Fixtures shared by the whole suite.

Elasticsearch is real: a local node that `scripts/local-es.sh` starts once per test run, or
the cluster named by KV_STORAGE_TEST_ELASTICSEARCH_URI. Every test gets its own index prefix
and everything under it is deleted afterwards, so tests never see each other's data and the
suite can run against a shared cluster.
"""

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from elasticsearch import AsyncElasticsearch, Elasticsearch
from kv_storage.config import Config, load_config
from kv_storage.es.provisioning import initialise

ROOT = Path(__file__).parents[1]
LOCAL_ES = ROOT / "scripts" / "local-es.sh"


@dataclass(frozen=True)
class Node:
    url: str
    username: str | None = None
    password: str | None = None


def _running(name: str) -> bool:
    return (
        subprocess.run([str(LOCAL_ES), "status", "--name", name], capture_output=True).returncode
        == 0
    )


@pytest.fixture(scope="session")
def _local_node() -> Iterator[Callable[[str, list[str]], str]]:
    """Starts local nodes on demand; stops at the end those that this run started."""
    started: list[str] = []

    def start(name: str, options: list[str]) -> str:
        was_running = _running(name)
        result = subprocess.run(
            [str(LOCAL_ES), "start", "--name", name, *options],
            stdout=subprocess.PIPE,
            text=True,
            timeout=600,
            check=True,
        )
        if not was_running:
            started.append(name)
        return result.stdout.strip().splitlines()[-1]

    yield start
    for name in started:
        subprocess.run([str(LOCAL_ES), "stop", "--name", name], check=False, timeout=120)


@pytest.fixture(scope="session")
def es_url(_local_node: Callable[[str, list[str]], str]) -> str:
    return os.environ.get("KV_STORAGE_TEST_ELASTICSEARCH_URI") or _local_node("test", [])


@pytest.fixture(scope="session")
def secured_es(_local_node: Callable[[str, list[str]], str]) -> Node:
    """A node with security on and a file-realm superuser, for basic authentication."""
    url = os.environ.get("KV_STORAGE_TEST_SECURED_ELASTICSEARCH_URI")
    if url:
        return Node(
            url,
            os.environ["KV_STORAGE_TEST_SECURED_ELASTICSEARCH_USERNAME"],
            os.environ["KV_STORAGE_TEST_SECURED_ELASTICSEARCH_PASSWORD"],
        )
    username, password = "kv-admin", f"pw-{uuid.uuid4().hex}"
    return Node(
        _local_node("test-secured", ["--security", f"{username}:{password}"]), username, password
    )


@pytest.fixture
def index_prefix(es_url: str) -> Iterator[str]:
    prefix = f"t-{uuid.uuid4().hex[:8]}-"
    yield prefix
    with Elasticsearch(es_url) as client:
        for name in client.indices.get(index=f"{prefix}*", expand_wildcards="all"):
            client.indices.delete(index=name, ignore_unavailable=True)
        templates = client.indices.get_index_template()["index_templates"]
        for template in templates:
            if template["name"].startswith(prefix):
                client.indices.delete_index_template(name=template["name"])


@pytest.fixture
async def es(es_url: str) -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(es_url)
    yield client
    await client.close()


@pytest.fixture
def make_config(es_url: str, index_prefix: str) -> Callable[..., Config]:
    """A configuration for this test's prefix; keyword arguments are KV_STORAGE_* variables."""

    def make(**environ: str) -> Config:
        return load_config(
            environ={
                "KV_STORAGE_ELASTICSEARCH_URI": es_url,
                "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
                **environ,
            }
        )

    return make


@pytest.fixture
async def initialised_config(
    make_config: Callable[..., Config], es: AsyncElasticsearch, index_prefix: str
) -> Config:
    """A configuration whose indices and templates exist."""
    await initialise(es, index_prefix)
    return make_config()
