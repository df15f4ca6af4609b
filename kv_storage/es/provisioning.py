"""Creates what the service needs in Elasticsearch and upgrades what an older version left.

Every index and template definition in ``elasticsearch/`` carries a version (a template's
``version``, an index's ``_meta.version``; none means 0, the original's layout). ``initialise``
creates what is missing, upgrades what is older (a template is replaced; an existing index's
mapping is extended with ``PUT _mapping``, which only adds), and leaves what is current or
newer alone. It never deletes or rewrites data. The per-storage data and history indices get
their mappings extended with their template's, so that an upgrade reaches the storages that
exist already.

Safe to run again and by several processes at once.
"""

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from elasticsearch import AsyncElasticsearch, BadRequestError, NotFoundError

from kv_storage.es.definitions import Definition, index_definitions, template_definitions
from kv_storage.es.migration import needs_migration
from kv_storage.es.names import SHARED_DATA, SHARED_HISTORY, IndexNames
from kv_storage.es.signing_keys import HISTORY_SCROLL, SigningKeys

_MAPPING_BATCH = 50
"""Indices whose mapping one ``PUT _mapping`` extends (their names go in the URL)."""


class Outcome(Enum):
    CREATED = "created"
    UPGRADED = "upgraded"
    UP_TO_DATE = "up to date"
    NEWER = "newer"
    TO_MIGRATE = "missing in data written before: run kv-storage init --migrate"


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    name: str
    outcome: Outcome
    from_version: int = 0
    to_version: int = 0
    count: int | None = None
    """For a group of indices: how many there are."""

    def __str__(self) -> str:
        counted = f" ({self.count} indices)" if self.count is not None else ""
        if self.outcome is Outcome.UPGRADED:
            change = f"upgraded from version {self.from_version} to {self.to_version}"
            return f"{self.kind} {self.name} {change}{counted}"
        if self.outcome is Outcome.NEWER:
            newer = f"is at version {self.from_version}, newer than this kv-storage knows"
            return f"{self.kind} {self.name} {newer} ({self.to_version}); left alone"
        return f"{self.kind} {self.name} {self.outcome.value}{counted}"


def template_version(body: Mapping[str, Any]) -> int:
    return int(body.get("version") or 0)


@functools.cache
def template_versions() -> dict[str, int]:
    """The version of each template this service needs, by its name before the prefix."""
    return {d.base_name: template_version(d.body) for d in template_definitions("")}


def mapping_version(mappings: Mapping[str, Any]) -> int:
    meta = mappings.get("_meta") or {}
    return int(meta.get("version") or 0)


SHARED_INDICES = frozenset({SHARED_DATA, SHARED_HISTORY})


async def initialise(
    client: AsyncElasticsearch, prefix: str, *, shared_shards: int = 1
) -> list[Step]:
    """``shared_shards``: the primary shards of the shared indices, if they are made now (an
    existing index keeps its own: a shard count changes only by reindexing)."""
    steps = [
        await _ensure_index(client, prefix, _with_shards(d, shared_shards))
        for d in index_definitions(prefix)
    ]
    for definition in template_definitions(prefix):
        steps.append(await _ensure_template(client, prefix, definition))
        steps.append(await _extend_storage_indices(client, prefix, definition))
    made = await SigningKeys(client, IndexNames(prefix)).ensure(HISTORY_SCROLL)
    steps.append(
        Step("signing key", HISTORY_SCROLL, Outcome.CREATED if made else Outcome.UP_TO_DATE)
    )
    missing = await needs_migration(client, IndexNames(prefix))
    steps.append(
        Step("key field", "of stored data", Outcome.TO_MIGRATE if missing else Outcome.UP_TO_DATE)
    )
    return steps


def _with_shards(definition: Definition, shared_shards: int) -> Definition:
    if definition.base_name not in SHARED_INDICES:
        return definition
    body = {
        **definition.body,
        "settings": {
            "index": {**definition.body["settings"]["index"], "number_of_shards": shared_shards}
        },
    }
    return Definition(definition.base_name, body)


async def _ensure_index(client: AsyncElasticsearch, prefix: str, definition: Definition) -> Step:
    name = prefix + definition.base_name
    wanted = mapping_version(definition.body["mappings"])
    try:
        current = await client.indices.get_mapping(index=name)
    except NotFoundError:
        try:
            await client.indices.create(index=name, **definition.body)
            return Step("index", name, Outcome.CREATED, to_version=wanted)
        except BadRequestError as error:
            if error.error != "resource_already_exists_exception":
                raise
            current = await client.indices.get_mapping(index=name)  # made meanwhile
    found = mapping_version(current[name]["mappings"])
    return await _upgrade_mappings(client, "index", name, [name], found, definition)


async def _ensure_template(client: AsyncElasticsearch, prefix: str, definition: Definition) -> Step:
    name = prefix + definition.base_name
    wanted = template_version(definition.body)
    answer = await client.options(ignore_status=404).indices.get_index_template(name=name)
    templates = answer.get("index_templates", [])
    if not templates:
        try:
            await client.indices.put_index_template(name=name, create=True, **definition.body)
            return Step("template", name, Outcome.CREATED, to_version=wanted)
        except BadRequestError:
            # Another process may have created it since we looked: compare with that one.
            answer = await client.indices.get_index_template(name=name)
            templates = answer["index_templates"]
    found = template_version(templates[0]["index_template"])
    if found > wanted:
        return Step("template", name, Outcome.NEWER, from_version=found, to_version=wanted)
    if found == wanted:
        return Step("template", name, Outcome.UP_TO_DATE, from_version=found, to_version=wanted)
    await client.indices.put_index_template(name=name, **definition.body)
    return Step("template", name, Outcome.UPGRADED, from_version=found, to_version=wanted)


async def _extend_storage_indices(
    client: AsyncElasticsearch, prefix: str, definition: Definition
) -> Step:
    """The template's mapping, added to every index it made before (its storages')."""
    pattern = f"{prefix}{definition.base_name}-*"
    mappings = definition.body["template"]["mappings"]
    wanted = mapping_version(mappings)
    found = await client.indices.get_mapping(
        index=pattern, expand_wildcards="open", allow_no_indices=True
    )
    versions = {name: mapping_version(body["mappings"]) for name, body in found.items()}
    older = sorted(name for name, version in versions.items() if version < wanted)
    if not older:
        return Step("indices", pattern, Outcome.UP_TO_DATE, count=len(versions))
    oldest = min(versions[name] for name in older)
    for start in range(0, len(older), _MAPPING_BATCH):
        await client.indices.put_mapping(index=older[start : start + _MAPPING_BATCH], **mappings)
    return Step("indices", pattern, Outcome.UPGRADED, oldest, wanted, count=len(older))


async def _upgrade_mappings(
    client: AsyncElasticsearch,
    kind: str,
    name: str,
    indices: list[str],
    found: int,
    definition: Definition,
) -> Step:
    wanted = mapping_version(definition.body["mappings"])
    if found > wanted:
        return Step(kind, name, Outcome.NEWER, from_version=found, to_version=wanted)
    if found == wanted:
        return Step(kind, name, Outcome.UP_TO_DATE, from_version=found, to_version=wanted)
    await client.indices.put_mapping(index=indices, **definition.body["mappings"])
    return Step(kind, name, Outcome.UPGRADED, from_version=found, to_version=wanted)
