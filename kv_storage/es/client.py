"""Builds the one Elasticsearch client of a process from its configuration section."""

import logging

from elastic_transport import AsyncTransport, OrjsonSerializer
from elastic_transport.client_utils import DEFAULT
from elasticsearch import AsyncElasticsearch

from kv_storage.config import ElasticsearchConfig
from kv_storage.es.waits import counting

logger = logging.getLogger(__name__)


def create_client(
    config: ElasticsearchConfig,
    *,
    request_timeout_s: float,
    transport_class: type[AsyncTransport] = AsyncTransport,
) -> AsyncElasticsearch:
    """Requests time out with the service's own request timeout, so none outlives its caller.

    Every command builds its client here (``serve``, ``init``, ``storage``), so each one logs
    the warning about an unverified certificate: it must not be possible to run unverified
    without it being said.
    """
    basic_auth = (
        (config.username, config.password)
        if config.username is not None and config.password is not None
        else None
    )
    if not config.verify_certs:
        logger.warning(
            "elasticsearch.tls.verify is false: Elasticsearch's certificate is not checked, "
            "so anyone between the service and %s can read and change its traffic",
            ", ".join(config.hosts),
        )
    return AsyncElasticsearch(
        hosts=list(config.hosts),
        basic_auth=basic_auth,
        api_key=config.api_key,
        ca_certs=DEFAULT if config.ca_file is None else config.ca_file,
        ssl_assert_fingerprint=DEFAULT if config.fingerprint is None else config.fingerprint,
        verify_certs=config.verify_certs,
        # Our own warning above replaces the client's, which would go to the warnings module.
        ssl_show_warn=False,
        request_timeout=request_timeout_s,
        retry_on_timeout=False,
        max_retries=len(config.hosts),
        retry_on_status=(502, 503, 504),
        connections_per_node=64,
        # orjson encodes and decodes several times faster than the json module: it was 45% of
        # a 1,000-key multi-set. It refuses text without a UTF-8 form, which never gets here.
        serializers={"application/json": OrjsonSerializer()},
        transport_class=counting(transport_class),
    )
