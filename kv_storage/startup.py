"""What ``serve`` checks once at start-up, so that the log says at once what is wrong.

A service that cannot reach Elasticsearch still starts (Elasticsearch may come up later, and
``/health`` must answer meanwhile), but an operator reading the start-up log should not have
to wait for the first request to learn that the certificate is not trusted or the password
is wrong.
"""

import asyncio
import logging

from elasticsearch import AsyncElasticsearch

from kv_storage.config import Config
from kv_storage.es.errors import describe, is_elasticsearch_error
from kv_storage.es.names import IndexNames

logger = logging.getLogger("kv_storage")

_PROBE_TIMEOUT_S = 10.0


async def check_elasticsearch(
    config: Config, client: AsyncElasticsearch, names: IndexNames
) -> None:
    """One request, its outcome logged; never raises for Elasticsearch's failures."""
    hosts = ", ".join(config.elasticsearch.hosts)
    timeout_s = min(config.app.request_timeout_s, _PROBE_TIMEOUT_S)
    try:
        async with asyncio.timeout(timeout_s):
            found = await client.indices.exists(index=names.registry)
    except TimeoutError:
        logger.error(
            "start-up check: Elasticsearch at %s did not answer within %g s", hosts, timeout_s
        )
    except Exception as error:
        if not is_elasticsearch_error(error):
            raise
        logger.error("start-up check: %s", describe(error))
    else:
        if found:
            logger.info("start-up check: Elasticsearch at %s answered", hosts)
        else:
            logger.warning(
                "start-up check: Elasticsearch at %s answered, but the registry index %s is "
                "missing: run `kv-storage init`",
                hosts,
                names.registry,
            )
