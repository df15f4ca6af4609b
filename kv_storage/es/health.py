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
from kv_storage.es.names import IndexNames

logger = logging.getLogger(__name__)

HEALTHY = "HEALTHY"
UNHEALTHY = "UNHEALTHY"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str
    message: str


async def _run_check(name: str, probe: Callable[[], Awaitable[object]], timeout_s: float) -> Check:
    try:
        async with asyncio.timeout(timeout_s):
            found = bool(await probe())
    except TimeoutError:
        return Check(name, UNHEALTHY, f"Elasticsearch did not answer within {timeout_s:g} s")
    except Exception as error:
        if not is_elasticsearch_error(error):
            raise
        logger.warning("health check %s failed: %s", name, describe(error))
        return Check(name, UNHEALTHY, classify(error))
    return Check(name, HEALTHY, "OK") if found else Check(name, UNHEALTHY, "Not found")


async def check_components(
    client: AsyncElasticsearch, names: IndexNames, *, timeout_s: float
) -> list[Check]:
    """The checks in the order the original service reported them."""
    return list(
        await asyncio.gather(
            _run_check(
                "STORAGE_REGISTRY",
                lambda: client.indices.exists(index=names.registry),
                timeout_s,
            ),
            _run_check(
                "STORAGE_DATA_TEMPLATE",
                lambda: client.indices.exists_index_template(name=names.data_template),
                timeout_s,
            ),
            _run_check(
                "STORAGE_HISTORY_TEMPLATE",
                lambda: client.indices.exists_index_template(name=names.history_template),
                timeout_s,
            ),
        )
    )
