"""Fixtures shared by the whole suite.

Elasticsearch
-------------
Elasticsearch is real.

- ``es_url``: the cluster named by ``KV_STORAGE_TEST_ELASTICSEARCH_URI``, or else the local
  node ``test`` that ``scripts/local-es.sh`` runs (security off).
- ``secured_es``: a cluster with security on, serving HTTPS, and a superuser, as a
  ``SecuredElasticsearch`` (url, username, password, the CA file that verifies its
  certificate and that certificate's SHA-256 fingerprint): the one named by
  ``KV_STORAGE_TEST_SECURED_ELASTICSEARCH_URI``, ``..._USERNAME``, ``..._PASSWORD`` and
  ``..._CA_FILE``, or else the local node ``test-secured`` (``local-es.sh --tls``).
- ``index_prefix``: a prefix of its own for each test (``t-<8 hex>-``); afterwards every index
  and index template whose name starts with it is deleted from the clusters the test used,
  so tests never see each other's data and the suite can share a cluster.
- ``es``: an ``AsyncElasticsearch`` client of ``es_url`` for one test.

A local node is started at most once per test run, and only when a selected test needs it.
The start (15-40 s, more when Elasticsearch must first be fetched) happens after collection,
before the first test, so that it does not count against the per-test timeout. At the end of
the run, the nodes that this run started are stopped; a node that already ran is left running.
Both are done by the hooks ``pytest_collection_finish`` and ``pytest_sessionfinish`` below:
a second definition of either in this module would replace them, so extend them instead.

The service
-----------
Fixtures that configure and run the service on the test's prefix (``make_config`` and below).
"""

import hashlib
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from elasticsearch import AsyncElasticsearch, Elasticsearch

from kv_storage import wiring
from kv_storage.app import create_app
from kv_storage.config import Config, load_config
from kv_storage.es.names import IndexNames
from kv_storage.es.provisioning import initialise
from kv_storage.es.registry import Registry, RegistryEntry
from kv_storage.model import Layout, StorageType

ROOT = Path(__file__).parents[1]
LOCAL_ES = ROOT / "scripts" / "local-es.sh"

# --------------------------------------------------------------------------- Elasticsearch

ES_URL_ENV = "KV_STORAGE_TEST_ELASTICSEARCH_URI"
SECURED_ES_URL_ENV = "KV_STORAGE_TEST_SECURED_ELASTICSEARCH_URI"
ORIGINAL_ES_URL_ENV = "KV_STORAGE_TEST_ORIGINAL_ELASTICSEARCH_URI"
"""A second cluster, standing in for a deployment of the original service (migration)."""
SECURED_ES_USERNAME_ENV = "KV_STORAGE_TEST_SECURED_ELASTICSEARCH_USERNAME"
SECURED_ES_PASSWORD_ENV = "KV_STORAGE_TEST_SECURED_ELASTICSEARCH_PASSWORD"
SECURED_ES_CA_FILE_ENV = "KV_STORAGE_TEST_SECURED_ELASTICSEARCH_CA_FILE"

# The local secured node listens on 127.0.0.1 only; fixed credentials let a later run reuse it.
SECURED_USERNAME = "kv-test-admin"
SECURED_PASSWORD = "kv-test-password"

# For each fixture backed by a local node: the variable naming a cluster to use instead, the
# node's name and the options of `scripts/local-es.sh start`.
LOCAL_TEST_NODE = "test"
"""The local node behind ``es_url`` when no cluster is named (tests that run scripts use it)."""

_LOCAL_NODES_OF_FIXTURES = {
    "es_url": (ES_URL_ENV, LOCAL_TEST_NODE, ()),
    "original_es_url": (ORIGINAL_ES_URL_ENV, "test-original", ()),
    "secured_es": (
        SECURED_ES_URL_ENV,
        "test-secured",
        ("--security", f"{SECURED_USERNAME}:{SECURED_PASSWORD}", "--tls"),
    ),
}
_START_TIMEOUT_S = 900  # a fresh clone may first install Maven and fetch Elasticsearch


@dataclass(frozen=True)
class SecuredElasticsearch:
    """A cluster with security and HTTPS on, and a user that may do everything there."""

    url: str
    username: str
    password: str
    ca_file: str
    """PEM of the CA that signed the node's certificate."""
    fingerprint: str
    """SHA-256 of the certificate the node presents, lower-case hex without colons."""

    def client(self) -> Elasticsearch:
        return Elasticsearch(
            self.url, basic_auth=(self.username, self.password), ca_certs=self.ca_file
        )


def certificate_fingerprint(url: str) -> str:
    """The SHA-256 fingerprint of the certificate the server at ``url`` presents."""
    parts = urlsplit(url)
    pem = ssl.get_server_certificate((parts.hostname or "", parts.port or 443), timeout=10)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


class LocalNodes:
    """The local Elasticsearch nodes of one test run, started by ``scripts/local-es.sh``.

    Nodes are started on first demand; a failed start is remembered and reported again to
    every test that needs the node, without trying again. ``stop_started`` stops the nodes
    that were not running before this run started them.
    """

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}
        self._failures: dict[str, str] = {}
        self._started: list[str] = []
        self.start_seconds: dict[str, float] = {}

    def url(self, name: str, *options: str) -> str:
        if name not in self._urls and name not in self._failures:
            self.start({name: options})
        if name in self._failures:
            raise RuntimeError(self._failures[name])
        return self._urls[name]

    def started_by_this_run(self, name: str) -> bool:
        return name in self._started

    def start(self, nodes: dict[str, tuple[str, ...]]) -> None:
        """Starts these nodes (name: options) unless this run did already.

        One after the other: on two cores, side by side is slower.
        """
        for name, options in nodes.items():
            if name in self._urls or name in self._failures:
                continue
            command = f"scripts/local-es.sh start --name {name}"
            was_running = _local_es("status", "--name", name).returncode == 0
            began = time.monotonic()
            try:
                result = _local_es("start", "--name", name, *options, timeout=_START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._failures[name] = f"{command} took more than {_START_TIMEOUT_S} s"
                continue
            if result.returncode != 0:
                self._failures[name] = f"{command} failed ({result.returncode}):\n{result.stderr}"
                continue
            self.start_seconds[name] = time.monotonic() - began
            if not was_running:
                self._started.append(name)
            self._urls[name] = result.stdout.strip().splitlines()[-1]

    def stop_started(self) -> None:
        while self._started:
            _local_es("stop", "--name", self._started.pop(), timeout=120)


def _local_es(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOCAL_ES), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_LOCAL_NODES = pytest.StashKey[LocalNodes]()


def _local_nodes(config: pytest.Config) -> LocalNodes:
    if _LOCAL_NODES not in config.stash:
        config.stash[_LOCAL_NODES] = LocalNodes()
    return config.stash[_LOCAL_NODES]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Starts the local nodes that the selected tests need, before the first test runs.

    Fixtures' setup counts against a test's timeout; starting here does not. A failure is not
    raised here: the fixture raises it, in the tests that need the node.
    """
    if session.config.option.collectonly:
        return
    needed: set[str] = set()
    for item in session.items:
        needed.update(getattr(item, "fixturenames", ()))
    nodes = _local_nodes(session.config)
    wanted = {
        name: options
        for fixture, (variable, name, options) in _LOCAL_NODES_OF_FIXTURES.items()
        if fixture in needed and not os.environ.get(variable)
    }
    nodes.start(wanted)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for name in wanted:
        if reporter is None or name not in nodes.start_seconds:
            continue
        how = (
            f"started in {nodes.start_seconds[name]:.0f} s"
            if nodes.started_by_this_run(name)
            else "already running"
        )
        reporter.write_line(f"local Elasticsearch node {name}: {nodes.url(name)} ({how})")


def pytest_sessionfinish(session: pytest.Session) -> None:
    _local_nodes(session.config).stop_started()


@pytest.fixture(scope="session")
def es_url(pytestconfig: pytest.Config) -> str:
    """The URL of the cluster the tests use (security off)."""
    variable, name, options = _LOCAL_NODES_OF_FIXTURES["es_url"]
    return os.environ.get(variable) or _local_nodes(pytestconfig).url(name, *options)


@pytest.fixture(scope="session")
def original_es_url(pytestconfig: pytest.Config) -> str:
    """A second node (security off), where a test builds a deployment of the original."""
    variable, name, options = _LOCAL_NODES_OF_FIXTURES["original_es_url"]
    return os.environ.get(variable) or _local_nodes(pytestconfig).url(name, *options)


@pytest.fixture(scope="session")
def secured_es(pytestconfig: pytest.Config) -> SecuredElasticsearch:
    """A cluster with security and HTTPS on, and a superuser's credentials."""
    url = os.environ.get(SECURED_ES_URL_ENV)
    if url:
        username = os.environ.get(SECURED_ES_USERNAME_ENV)
        password = os.environ.get(SECURED_ES_PASSWORD_ENV)
        ca_file = os.environ.get(SECURED_ES_CA_FILE_ENV)
        if not username or not password or not ca_file or not url.startswith("https://"):
            needs = (
                f"{SECURED_ES_USERNAME_ENV}, {SECURED_ES_PASSWORD_ENV}, {SECURED_ES_CA_FILE_ENV}"
            )
            raise RuntimeError(f"{SECURED_ES_URL_ENV} needs an https:// URL and {needs}")
        return SecuredElasticsearch(url, username, password, ca_file, certificate_fingerprint(url))
    _, name, options = _LOCAL_NODES_OF_FIXTURES["secured_es"]
    url = _local_nodes(pytestconfig).url(name, *options)
    ca_file = _local_es("ca-file", "--name", name).stdout.strip()
    return SecuredElasticsearch(
        url, SECURED_USERNAME, SECURED_PASSWORD, ca_file, certificate_fingerprint(url)
    )


@pytest.fixture
def index_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A prefix for this test's index and template names; what it names is deleted afterwards.

    Cleaned are the clusters of the test's fixtures (``es_url`` and ``secured_es``).
    """
    prefix = f"t-{uuid.uuid4().hex[:8]}-"
    yield prefix
    clients: list[Elasticsearch] = []
    try:
        if "es_url" in request.fixturenames:
            clients.append(Elasticsearch(request.getfixturevalue("es_url")))
        if "secured_es" in request.fixturenames:
            secured: SecuredElasticsearch = request.getfixturevalue("secured_es")
            clients.append(secured.client())
    except RuntimeError:
        pass  # a local node that did not start: the test has reported it, nothing to clean
    for client in clients:
        with client:
            delete_prefixed(client, prefix)


def delete_prefixed(client: Elasticsearch, prefix: str) -> None:
    """Deletes the indices and index templates whose names start with ``prefix``.

    By name: deleting by wildcard is refused where ``action.destructive_requires_name`` is true
    (the default). Nothing to delete is fine.
    """
    indices = sorted(client.indices.get(index=f"{prefix}*", expand_wildcards="all"))
    for start in range(0, len(indices), 50):
        client.indices.delete(index=",".join(indices[start : start + 50]), ignore_unavailable=True)
    answer = client.options(ignore_status=404).indices.get_index_template(name=f"{prefix}*")
    for template in answer.get("index_templates", []):
        client.options(ignore_status=404).indices.delete_index_template(name=template["name"])


@pytest.fixture
async def es(es_url: str) -> AsyncIterator[AsyncElasticsearch]:
    """An ``AsyncElasticsearch`` client of ``es_url`` for this test, closed after it."""
    client = AsyncElasticsearch(es_url)
    yield client
    await client.close()


# --------------------------------------------------------------------------------- The service


LAYOUTS = ("per-storage", "shared")
BOTH_LAYOUTS = pytest.mark.parametrize("storage_layout", LAYOUTS, indirect=True)
"""For a module or a test whose storages must behave the same in either layout:
``pytestmark = BOTH_LAYOUTS`` runs each test once per layout."""


@pytest.fixture
def storage_layout(request: pytest.FixtureRequest) -> str:
    """The layout of the storages a test makes (``create_storage``, and the service's
    ``elasticsearch.layout``): the default's, unless the test runs in ``BOTH_LAYOUTS``."""
    layout: str = getattr(request, "param", "per-storage")
    return layout


@pytest.fixture
def make_config(es_url: str, index_prefix: str, storage_layout: str) -> Callable[..., Config]:
    """A configuration for this test's prefix; keyword arguments are KV_STORAGE_* variables."""

    def make(**environ: str) -> Config:
        return load_config(
            environ={
                "KV_STORAGE_ELASTICSEARCH_URI": es_url,
                "KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX": index_prefix,
                "KV_STORAGE_ELASTICSEARCH_LAYOUT": storage_layout,
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


@dataclass(frozen=True)
class StorageRef:
    id: str
    secret_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Secret-Key": self.secret_key}


StorageFactory = Callable[..., Awaitable[StorageRef]]


@pytest.fixture
def create_storage(
    es: AsyncElasticsearch, index_prefix: str, storage_layout: str
) -> StorageFactory:
    """Registers a storage through the service's own registry code (``es.registry``), as the
    service would; the tests of storages the CloudStack plugin wrote write their documents
    themselves (``test_layouts``, ``test_storage_api``)."""
    registry = Registry(es, IndexNames(index_prefix))

    async def create(
        storage_type: str = "ACCOUNT",
        *,
        history_enabled: bool = False,
        deleted: bool = False,
        expiration_timestamp: int | None = None,
        storage_id: str | None = None,
        layout: str | None = None,
    ) -> StorageRef:
        """``layout``: this storage's, rather than the test's (``storage_layout``)."""
        ref = StorageRef(storage_id or str(uuid.uuid4()), uuid.uuid4().hex)
        temp = storage_type == "TEMP"
        await registry.create(
            RegistryEntry(
                id=ref.id,
                type=StorageType(storage_type),
                deleted=deleted,
                history_enabled=history_enabled,
                secret_key=ref.secret_key,
                ttl_ms=3_600_000 if temp else None,
                expiration_timestamp_ms=(
                    (expiration_timestamp or int(time.time() * 1000) + 3_600_000) if temp else None
                ),
                layout=Layout(layout or storage_layout),
            )
        )
        return ref

    return create


ServiceStarter = Callable[[Config, Sequence[wiring.Part]], Awaitable[wiring.Service]]


@pytest.fixture
async def start_service() -> AsyncIterator[ServiceStarter]:
    """Starts parts of a service for a test, wired as the service wires them
    (``kv_storage.wiring``); whatever started is stopped after the test, in reverse order."""
    async with AsyncExitStack() as stack:

        async def start(config: Config, wanted: Sequence[wiring.Part]) -> wiring.Service:
            service = wiring.Service(config, request_timeout_s=config.app.request_timeout_s)
            return await stack.enter_async_context(wiring.running(service, wanted))

        yield start


@pytest.fixture
async def api(
    initialised_config: Config,
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
) -> TestClient[web.Request, web.Application]:
    """The service, in process, on this test's prefix."""
    return await aiohttp_client(create_app(initialised_config))


@dataclass
class CountingProxy:
    """Forwards to the real node and counts what passes: how many requests reach Elasticsearch."""

    url: str
    requests: list[tuple[str, str]]
    bodies: list[bytes]
    """The body of each request, in the same order."""

    def count(self, method: str | None = None, path_part: str = "", body_part: bytes = b"") -> int:
        return sum(
            1
            for (seen_method, path), body in zip(self.requests, self.bodies, strict=True)
            if (method is None or seen_method == method) and path_part in path and body_part in body
        )

    def clear(self) -> None:
        self.requests.clear()
        self.bodies.clear()


@pytest.fixture
async def es_proxy(
    es_url: str, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[CountingProxy]:
    session = aiohttp.ClientSession(auto_decompress=False)
    requests: list[tuple[str, str]] = []
    bodies: list[bytes] = []

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        requests.append((request.method, request.raw_path))
        bodies.append(body)
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with session.request(
            request.method, es_url + request.raw_path, headers=headers, data=body
        ) as answer:
            body = await answer.read()
            passed = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return web.Response(status=answer.status, body=body, headers=passed)

    proxy = web.Application(client_max_size=1024**3)
    proxy.router.add_route("*", "/{tail:.*}", forward)
    server = await aiohttp_server(proxy)
    yield CountingProxy(f"http://127.0.0.1:{server.port}", requests, bodies)
    await session.close()
