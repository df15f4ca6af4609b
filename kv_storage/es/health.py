"""The component checks behind ``GET /health?detailed=true``.

Each check gets its own deadline, so that an Elasticsearch that hangs still yields an answer
in the health shape within the request timeout instead of a timeout error.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from elasticsearch import AsyncElasticsearch

from kv_storage.es.errors import classify, describe, is_elasticsearch_error
from kv_storage.es.names import DATA_TEMPLATE, HISTORY_TEMPLATE, IndexNames
from kv_storage.es.provisioning import template_version, template_versions
from kv_storage.es.shard_budget import ShardBudget

logger = logging.getLogger(__name__)

HEALTHY = "HEALTHY"
UNHEALTHY = "UNHEALTHY"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str
    message: str


_OK = "OK"
_NOT_FOUND = "Not found"


async def _run_check(name: str, probe: Callable[[], Awaitable[str]], timeout_s: float) -> Check:
    """``probe`` answers ``OK`` or what is wrong."""
    try:
        async with asyncio.timeout(timeout_s):
            problem = await probe()
    except TimeoutError:
        return Check(name, UNHEALTHY, f"Elasticsearch did not answer within {timeout_s:g} s")
    except Exception as error:
        if not is_elasticsearch_error(error):
            raise
        logger.warning("health check %s failed: %s", name, describe(error))
        return Check(name, UNHEALTHY, classify(error))
    return Check(name, HEALTHY if problem == _OK else UNHEALTHY, problem)


async def check_components(
    client: AsyncElasticsearch, names: IndexNames, *, timeout_s: float
) -> list[Check]:
    """The checks in the order the original service reported them."""
    wanted = template_versions()

    async def registry() -> str:
        return _OK if await client.indices.exists(index=names.registry) else _NOT_FOUND

    async def template(name: str, base_name: str) -> str:
        answer = await client.options(ignore_status=404).indices.get_index_template(name=name)
        found = answer.get("index_templates", [])
        if not found:
            return _NOT_FOUND
        version, needed = template_version(found[0]["index_template"]), wanted[base_name]
        if version < needed:
            return (
                f"Outdated: version {version}, this service needs {needed}; "
                "run kv-storage init to upgrade it"
            )
        return _OK

    *checks, warning = await asyncio.gather(
        _run_check("STORAGE_REGISTRY", registry, timeout_s),
        _run_check(
            "STORAGE_DATA_TEMPLATE",
            lambda: template(names.data_template, DATA_TEMPLATE),
            timeout_s,
        ),
        _run_check(
            "STORAGE_HISTORY_TEMPLATE",
            lambda: template(names.history_template, HISTORY_TEMPLATE),
            timeout_s,
        ),
        _shard_budget_warning(client, timeout_s),
    )
    return checks if warning is None else [*checks, warning]


SHARD_BUDGET_WARNING = 0.9
"""The share of the cluster's shard limit from which the detailed health warns."""


async def _shard_budget_warning(client: AsyncElasticsearch, timeout_s: float) -> Check | None:
    """A fourth check, ``SHARD_BUDGET``, only while 90% or more of the cluster's shards are in
    use: a warning (still ``HEALTHY``: the service serves), before per-storage storages are
    refused. Absent otherwise, so the answer stays the original's three checks."""
    try:
        async with asyncio.timeout(timeout_s):
            usage = await ShardBudget(client).usage()
    except Exception as error:  # the three checks above say what is wrong with Elasticsearch
        logger.debug("health: the shard budget could not be read: %s", describe(error))
        return None
    if usage.share < SHARD_BUDGET_WARNING:
        return None
    return Check(
        "SHARD_BUDGET",
        HEALTHY,
        f"{usage.used} of {usage.limit} shards in use ({usage.share:.0%}; "
        "cluster.max_shards_per_node per data node): new storages in the per-storage layout "
        "will soon be refused; the shared layout needs no more shards",
    )
