"""Creates the indices and templates the service needs, leaving existing ones alone.

Safe to run again and by several processes at once: a concurrent creation of the same index
is reported as already existing.
"""

from dataclasses import dataclass
from enum import Enum

from elasticsearch import AsyncElasticsearch, BadRequestError

from kv_storage.es.definitions import index_definitions, template_definitions
from kv_storage.es.names import IndexNames
from kv_storage.es.signing_keys import HISTORY_SCROLL, SigningKeys


class Outcome(Enum):
    CREATED = "created"
    EXISTS = "already exists"


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    name: str
    outcome: Outcome

    def __str__(self) -> str:
        return f"{self.kind} {self.name} {self.outcome.value}"


async def initialise(client: AsyncElasticsearch, prefix: str) -> list[Step]:
    steps: list[Step] = []
    for definition in index_definitions(prefix):
        name = prefix + definition.base_name
        outcome = Outcome.EXISTS
        if not await client.indices.exists(index=name):
            try:
                await client.indices.create(index=name, **definition.body)
                outcome = Outcome.CREATED
            except BadRequestError as error:
                if error.error != "resource_already_exists_exception":
                    raise
        steps.append(Step("index", name, outcome))
    for definition in template_definitions(prefix):
        name = prefix + definition.base_name
        outcome = Outcome.EXISTS
        if not await client.indices.exists_index_template(name=name):
            try:
                await client.indices.put_index_template(name=name, create=True, **definition.body)
                outcome = Outcome.CREATED
            except BadRequestError:
                # Another process may have created it since we looked.
                if not await client.indices.exists_index_template(name=name):
                    raise
        steps.append(Step("template", name, outcome))
    made = await SigningKeys(client, IndexNames(prefix)).ensure(HISTORY_SCROLL)
    steps.append(Step("signing key", HISTORY_SCROLL, Outcome.CREATED if made else Outcome.EXISTS))
    return steps
