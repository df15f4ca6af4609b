"""``kv-storage init`` from Python and ``elasticsearch/init.sh`` leave the same cluster state."""

import asyncio
import copy
import subprocess
from pathlib import Path
from typing import Any

from elasticsearch import AsyncElasticsearch

from kv_storage.es.definitions import index_definitions, template_definitions
from kv_storage.es.provisioning import Outcome, initialise

INIT_SH = Path(__file__).parents[1] / "elasticsearch" / "init.sh"

INDICES = (
    "storage-registry",
    "storage-registry-lock",
    "storage-shared-data",
    "storage-shared-history",
    "storage-signing-keys",
)
_VOLATILE_SETTINGS = {"uuid", "creation_date", "provided_name", "version", "routing"}


async def _state(es: AsyncElasticsearch, prefix: str) -> dict[str, Any]:
    """Indices and templates of one prefix, with the prefix and volatile fields taken out."""
    state: dict[str, Any] = {}
    for name in INDICES:
        index = (await es.indices.get(index=prefix + name))[prefix + name]
        settings = {
            k: v for k, v in index["settings"]["index"].items() if k not in _VOLATILE_SETTINGS
        }
        state[f"index {name}"] = {"mappings": index["mappings"], "settings": settings}
    for name in ("storage-data", "storage-history"):
        templates = (await es.indices.get_index_template(name=prefix + name))["index_templates"]
        body = templates[0]["index_template"]
        body["index_patterns"] = [p.removeprefix(prefix) for p in body["index_patterns"]]
        state[f"template {name}"] = body
    keys = await es.search(index=prefix + "storage-signing-keys")
    state["signing keys"] = sorted(hit["_id"] for hit in keys["hits"]["hits"])
    return state


def _created(prefix: str) -> list[tuple[str, str, Outcome]]:
    return [
        ("index", f"{prefix}storage-registry-lock", Outcome.CREATED),
        ("index", f"{prefix}storage-registry", Outcome.CREATED),
        ("index", f"{prefix}storage-shared-data", Outcome.CREATED),
        ("index", f"{prefix}storage-shared-history", Outcome.CREATED),
        ("index", f"{prefix}storage-signing-keys", Outcome.CREATED),
        ("template", f"{prefix}storage-data", Outcome.CREATED),
        ("indices", f"{prefix}storage-data-*", Outcome.UP_TO_DATE),
        ("template", f"{prefix}storage-history", Outcome.CREATED),
        ("indices", f"{prefix}storage-history-*", Outcome.UP_TO_DATE),
        ("signing key", "history-scroll", Outcome.CREATED),
        ("key field", "of stored data", Outcome.UP_TO_DATE),
    ]


async def test_initialise_creates_then_reports_up_to_date(
    es: AsyncElasticsearch, index_prefix: str
) -> None:
    first = await initialise(es, index_prefix)
    assert [(step.kind, step.name, step.outcome) for step in first] == _created(index_prefix)
    before = await _state(es, index_prefix)
    second = await initialise(es, index_prefix)
    assert [step.outcome for step in second] == [Outcome.UP_TO_DATE] * 11
    assert await _state(es, index_prefix) == before


async def _original_layout(es: AsyncElasticsearch, prefix: str) -> None:
    """What the original service (or this one before layouts had versions) left: the same
    definitions without their version, and a storage whose data index has no key field."""
    for definition in index_definitions(prefix):
        body = copy.deepcopy(definition.body)
        del body["mappings"]["_meta"]
        await es.indices.create(index=prefix + definition.base_name, **body)
    for definition in template_definitions(prefix):
        body = copy.deepcopy(definition.body)
        del body["version"]
        del body["template"]["mappings"]["_meta"]
        body["template"]["mappings"]["properties"].pop("key", None)
        await es.indices.put_index_template(name=prefix + definition.base_name, **body)
    await es.index(index=f"{prefix}storage-data-old", id="k1", document={"value": "v1"})
    history = {"key": "k1", "value": "v1", "operation": "set", "timestamp": 1}
    await es.index(index=f"{prefix}storage-history-old", document=history, refresh=True)


async def test_initialise_upgrades_an_older_layout_in_place_and_keeps_the_data(
    es: AsyncElasticsearch, index_prefix: str
) -> None:
    await _original_layout(es, index_prefix)
    steps = await initialise(es, index_prefix)
    assert [str(step) for step in steps] == [
        f"index {index_prefix}storage-registry-lock upgraded from version 0 to 1",
        f"index {index_prefix}storage-registry upgraded from version 0 to 3",
        f"index {index_prefix}storage-shared-data upgraded from version 0 to 1",
        f"index {index_prefix}storage-shared-history upgraded from version 0 to 1",
        f"index {index_prefix}storage-signing-keys upgraded from version 0 to 1",
        f"template {index_prefix}storage-data upgraded from version 0 to 2",
        f"indices {index_prefix}storage-data-* upgraded from version 0 to 2 (1 indices)",
        f"template {index_prefix}storage-history upgraded from version 0 to 1",
        f"indices {index_prefix}storage-history-* upgraded from version 0 to 1 (1 indices)",
        "signing key history-scroll created",
        "key field of stored data missing in data written before: run kv-storage init --migrate",
    ]
    data = f"{index_prefix}storage-data-old"
    mapping = (await es.indices.get_mapping(index=data))[data]["mappings"]
    assert mapping["properties"]["key"] == {"type": "keyword"}
    assert (await es.get(index=data, id="k1"))["_source"] == {"value": "v1"}
    assert (await es.count(index=f"{index_prefix}storage-history-old"))["count"] == 1
    again = await initialise(es, index_prefix)
    assert {step.outcome for step in again[:-1]} == {Outcome.UP_TO_DATE}
    assert again[-1].outcome is Outcome.TO_MIGRATE  # until init --migrate ran


async def test_a_newer_layout_is_left_alone(es: AsyncElasticsearch, index_prefix: str) -> None:
    """An older kv-storage's init, run against a cluster a newer one upgraded, changes
    nothing back."""
    await initialise(es, index_prefix)
    newer = copy.deepcopy(template_definitions(index_prefix)[0].body)
    newer["version"] = 99
    name = f"{index_prefix}storage-data"
    await es.indices.put_index_template(name=name, **newer)
    steps = {step.name: step for step in await initialise(es, index_prefix)}
    assert steps[name].outcome is Outcome.NEWER
    assert str(steps[name]).endswith(
        "is at version 99, newer than this kv-storage knows (2); left alone"
    )
    template = (await es.indices.get_index_template(name=name))["index_templates"][0]
    assert template["index_template"]["version"] == 99


async def test_templates_apply_to_prefixed_indices_only(
    es: AsyncElasticsearch, index_prefix: str
) -> None:
    await initialise(es, index_prefix)
    await es.indices.create(index=f"{index_prefix}storage-data-abc")
    mapping = await es.indices.get_mapping(index=f"{index_prefix}storage-data-abc")
    assert "value" in mapping[f"{index_prefix}storage-data-abc"]["mappings"]["properties"]
    template = await es.indices.get_index_template(name=f"{index_prefix}storage-history")
    assert template["index_templates"][0]["index_template"]["index_patterns"] == [
        f"{index_prefix}storage-history-*"
    ]


async def test_shell_script_and_python_upgrade_an_older_layout_alike(
    es: AsyncElasticsearch, es_url: str, index_prefix: str
) -> None:
    """The same outcome, line for line, and the same state after: from the original's
    layout, then again from the upgraded one."""
    shell_prefix, python_prefix = f"{index_prefix}sh-", f"{index_prefix}py-"
    for prefix in (shell_prefix, python_prefix):
        await _original_layout(es, prefix)
    for _ in range(2):
        result = await asyncio.to_thread(
            subprocess.run,
            [str(INIT_SH), "-p", shell_prefix, es_url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        steps = [str(step) for step in await initialise(es, python_prefix)]
        shell_lines = result.stdout.replace(shell_prefix, python_prefix).splitlines()
        assert shell_lines == steps
    assert await _state(es, shell_prefix) == await _state(es, python_prefix)
    for prefix in (shell_prefix, python_prefix):
        data = f"{prefix}storage-data-old"
        mapping = (await es.indices.get_mapping(index=data))[data]["mappings"]
        assert mapping["properties"]["key"] == {"type": "keyword"}


async def test_shell_script_and_python_leave_identical_state(
    es: AsyncElasticsearch, es_url: str, index_prefix: str
) -> None:
    shell_prefix = f"{index_prefix}sh-"
    python_prefix = f"{index_prefix}py-"
    result = await asyncio.to_thread(
        subprocess.run,
        [str(INIT_SH), "-p", shell_prefix, es_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    await initialise(es, python_prefix)
    assert await _state(es, shell_prefix) == await _state(es, python_prefix)


async def test_multi_megabyte_value_is_stored_and_read_back(
    es: AsyncElasticsearch, index_prefix: str
) -> None:
    await initialise(es, index_prefix)
    index = f"{index_prefix}storage-data-big"
    value = "ü€x" * 2_000_000  # 12 MB of UTF-8
    await es.index(index=index, id="k", document={"value": value}, refresh=True)
    assert (await es.get(index=index, id="k"))["_source"]["value"] == value


async def test_history_sorts_by_every_field_including_long_values(
    es: AsyncElasticsearch, index_prefix: str
) -> None:
    await initialise(es, index_prefix)
    index = f"{index_prefix}storage-history-h"
    records: list[dict[str, Any]] = [
        {"key": "b", "value": "v" * 100_000, "operation": "set", "timestamp": 3},
        {"key": "a", "value": "a-short", "operation": "delete", "timestamp": 1},
        {"key": None, "value": None, "operation": "clear", "timestamp": 2},
    ]
    for number, record in enumerate(records):
        await es.index(index=index, id=str(number), document=record)
    await es.indices.refresh(index=index)
    for field in ("key", "value", "operation", "timestamp"):
        for order in ("asc", "desc"):
            found = await es.search(index=index, sort=[{field: {"order": order}}], size=10)
            assert len(found["hits"]["hits"]) == 3, (field, order)
    by_time = await es.search(index=index, sort=[{"timestamp": "desc"}])
    assert [hit["_source"]["timestamp"] for hit in by_time["hits"]["hits"]] == [3, 2, 1]
