"""GET /metrics: the Prometheus text format, with route templates and never a storage id."""

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StorageFactory
from tests.helpers import Client, get, path, put


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_requests_elasticsearch_history_and_cache(
    api: Client, create_storage: StorageFactory
) -> None:
    storage = await create_storage(history_enabled=True)
    await put(api, storage, "k", "v")
    await get(api, storage, "k")
    await get(api, storage, "absent")
    await api.get("/no/such/path")
    response = await api.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    assert storage.id not in text
    assert storage.secret_key not in text
    found = samples(text)
    get_route = (("method", "GET"), ("route", "/get/{storage_id}/{key}"))
    assert found[("kv_storage_http_requests_total", (*get_route, ("status", "200")))] == 1
    assert found[("kv_storage_http_requests_total", (*get_route, ("status", "404")))] == 1
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert found[("kv_storage_http_requests_total", unmatched)] == 1
    assert found[("kv_storage_http_request_duration_seconds_count", get_route)] == 2

    def sent(method: str) -> float:
        key = ("kv_storage_elasticsearch_requests_total", (("method", method), ("outcome", "2xx")))
        return found.get(key, 0)

    assert sent("GET") >= 1  # the registry read
    assert sent("POST") >= 2  # the two gets, each an _mget
    assert sent("PUT") >= 1  # the set, a _bulk
    assert found[("kv_storage_history_buffered_records", ())] == 1
    assert found[("kv_storage_history_written_records_total", ())] == 0
    assert found[("kv_storage_cache_misses_total", ())] == 1
    assert found[("kv_storage_cache_hits_total", ())] == 2
    assert found[("kv_storage_cache_entries", ())] == 1


async def test_elasticsearch_failures_are_counted(
    api: Client, create_storage: StorageFactory
) -> None:
    # A storage never written has no index (per-storage layout): list's refresh of it is a
    # 404 from Elasticsearch, an answer, not a failure; the list is empty.
    storage = await create_storage()
    response = await api.get(path("list", storage), headers=storage.headers)
    assert (response.status, await response.json()) == (200, [])
    found = samples(await (await api.get("/metrics")).text())
    assert (
        found[("kv_storage_elasticsearch_requests_total", (("method", "POST"), ("outcome", "4xx")))]
        == 1
    )
