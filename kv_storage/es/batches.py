"""The requests that carry batches of key/value operations: one ``_mget`` for reads of any
storages, one ``_bulk`` for writes, their bodies built as bytes, their answers read item by
item.

Each operation is encoded once, when it arrives (``DataStore.reads``, ``sets``, ``deletes``):
its part of the body and its exact size in bytes, which bounds a batch. A batch's body is then
the parts joined, and its answer is split back into one outcome per part, by position (both
``_mget`` and ``_bulk`` answer their items in the order they were sent).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from kv_storage.es.errors import ItemError, refused_by_write_block
from kv_storage.es.placement import Placement
from kv_storage.model import Condition, Version

_INDEX_NOT_FOUND = "index_not_found_exception"
_CONFLICT = 409
_NOT_FOUND = 404

BULK_ANSWER = ["errors", "items.*.status", "items.*.error.type", "items.*.error.reason"]
"""All a bulk answer needs to say: per item, its status, or why it failed (a fraction of the
full answer, which Elasticsearch must write and the client parse). Every item keeps its
status, so that the items stay in place."""

BULK_ANSWER_VERSIONED = [*BULK_ANSWER, "items.*._seq_no", "items.*._primary_term"]
"""The same, with the version each item wrote: for a batch that holds a single-key set, whose
answer carries its ETag."""

MGET_ANSWER = [
    "docs._id",
    "docs.found",
    "docs._source.value",
    "docs.error.type",
    "docs.error.reason",
]
"""Per document: whether it was found, its value, or why it could not be read. ``_id`` keeps
every document in the answer, in place, whatever else is filtered away."""

MGET_ANSWER_VERSIONED = [*MGET_ANSWER, "docs._seq_no", "docs._primary_term"]
"""The same, with each document's version: for a batch that holds a single-key get, which
answers its ETag."""


@dataclass(frozen=True, slots=True)
class Reads:
    """The documents one operation reads, as part of an ``_mget`` body (comma-separated
    document specs, without the brackets)."""

    ids: tuple[str, ...]
    body: bytes
    versioned: bool = False
    """Its outcome carries each value's version (``Found``: a single-key get answers its
    ETag); else the values alone, as a multi-get answers them."""


@dataclass(frozen=True, slots=True)
class Writes:
    """The actions of one operation, as part of a ``_bulk`` body (NDJSON lines)."""

    ids: tuple[str, ...]
    body: bytes
    missing_ok: bool
    """Deletes: a document that was not there is gone all the same (404 is success)."""
    conditional: bool = False
    """Each action carries its condition: a version conflict (or, for a delete, a missing
    document) is that action's precondition failing, not an error."""
    versioned: bool = False
    """Its answer needs the versions written (a single-key set answers its ETag); the
    versions of a multi-key write, which nobody reads, are neither asked for nor parsed."""


def encode_reads(where: Placement, keys: Iterable[str], *, versioned: bool = False) -> Reads:
    ids = tuple(dict.fromkeys(keys))
    specs = orjson.dumps([_target(where, key) for key in ids])
    return Reads(ids, specs[1:-1], versioned)


def encode_sets(where: Placement, pairs: Mapping[str, str], *, versioned: bool = False) -> Writes:
    """One index action per pair: ``{"index":{...}}`` and ``{"key":...,"value":...}``, each a
    line. The key goes in a field of its own too (layout version 2): listing by prefix sorts
    and searches it, which ``_id`` does not allow. In the shared layout the document names
    its storage too, and the action carries its routing."""
    dumps = orjson.dumps
    if where.shared:
        return Writes(
            tuple(pairs),
            b"".join(
                [
                    dumps({"index": _target(where, key)})
                    + b"\n"
                    + dumps(where.tagged({"key": key, "value": value}))
                    + b"\n"
                    for key, value in pairs.items()
                ]
            ),
            missing_ok=False,
            versioned=versioned,
        )
    head = b'{"index":{"_index":' + dumps(where.data_index) + b',"_id":'
    body = b"".join(
        [
            head
            + (encoded := dumps(key))
            + b'}}\n{"key":'
            + encoded
            + b',"value":'
            + dumps(value)
            + b"}\n"
            for key, value in pairs.items()
        ]
    )
    return Writes(tuple(pairs), body, missing_ok=False, versioned=versioned)


def encode_deletes(where: Placement, keys: Iterable[str]) -> Writes:
    ids = tuple(dict.fromkeys(keys))
    dumps = orjson.dumps
    body = b"".join([dumps({"delete": _target(where, key)}) + b"\n" for key in ids])
    return Writes(ids, body, missing_ok=True)


def encode_conditional_set(where: Placement, key: str, value: str, condition: Condition) -> Writes:
    """One set that Elasticsearch carries out only if the key is at ``condition.version``
    (``if_seq_no``/``if_primary_term``), or does not exist (``create``)."""
    action = {**_target(where, key), **_checks(condition)}
    operation = "create" if condition.absent else "index"
    source = where.tagged({"key": key, "value": value})
    body = orjson.dumps({operation: action}) + b"\n" + orjson.dumps(source)
    return Writes((key,), body + b"\n", missing_ok=False, conditional=True, versioned=True)


def encode_conditional_delete(where: Placement, key: str, condition: Condition) -> Writes:
    """One delete that Elasticsearch carries out only if the key is at ``condition.version``."""
    action = {**_target(where, key), **_checks(condition)}
    return Writes((key,), orjson.dumps({"delete": action}) + b"\n", False, conditional=True)


def _target(where: Placement, key: str) -> dict[str, object]:
    """The document of ``key``, as an ``_mget`` spec or a ``_bulk`` action names it."""
    if where.routing is None:
        return {"_index": where.data_index, "_id": key}
    return {"_index": where.data_index, "_id": where.data_id(key), "routing": where.routing}


def _checks(condition: Condition) -> dict[str, int]:
    if condition.version is None:
        return {}
    return {
        "if_seq_no": condition.version.seq_no,
        "if_primary_term": condition.version.primary_term,
    }


def mget_body(parts: Sequence[Reads]) -> Any:
    return as_sent(b'{"docs":[' + b",".join(part.body for part in parts if part.ids) + b"]}")


def bulk_body(parts: Sequence[Writes]) -> Any:
    return as_sent(b"".join(part.body for part in parts))


def as_sent(body: bytes) -> Any:
    """A body the client sends as it is: its serializers pass bytes through untouched (its
    type hints name only the structures it would encode itself)."""
    return body


@dataclass(frozen=True, slots=True)
class Found:
    """A key's value (``None`` for a document without one) and its version."""

    value: str | None
    version: Version


ReadOutcome = list[Found | None] | list[str | None] | ItemError
"""The values of a part's ids, in order (``None``: no such key), with their versions if the
part is ``versioned``; or why a document of it could not be read, which fails that part
alone."""


def read_outcomes(parts: Sequence[Reads], answer: Mapping[str, Any]) -> list[ReadOutcome]:
    docs: list[Mapping[str, Any]] = answer.get("docs") or []
    if len(docs) != sum(len(part.ids) for part in parts):
        raise ItemError({"error": f"_mget answered {len(docs)} documents"}, what="_mget answer")
    outcomes: list[ReadOutcome] = []
    position = 0
    for part in parts:
        documents = docs[position : position + len(part.ids)]
        position += len(part.ids)
        failure: ItemError | None = None
        for document in documents:
            error = document.get("error")
            if error is not None and _error_type(error) != _INDEX_NOT_FOUND:
                failure = failure or ItemError(document, what="document")
        if failure is not None:
            outcomes.append(failure)
        elif part.versioned:
            outcomes.append([_found(doc) if doc.get("found") else None for doc in documents])
        else:
            outcomes.append([_value(doc) if doc.get("found") else None for doc in documents])
    return outcomes


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    failed: dict[str, Mapping[str, Any]]
    """The ids of a part that Elasticsearch did not carry out, with their items."""
    versions: dict[str, Version]
    """The version each carried-out set or delete left its key at (its next ETag)."""
    refused: frozenset[str] = frozenset()
    """Of a conditional part: the ids whose condition did not hold (nothing changed)."""
    closed: bool = False
    """An action met its index's write block: the storage was deleted, most likely
    (``kv_storage.es.retirement``)."""


def write_outcomes(parts: Sequence[Writes], answer: Mapping[str, Any]) -> list[WriteOutcome]:
    items: list[Mapping[str, Any]] = answer.get("items") or []
    if len(items) != sum(len(part.ids) for part in parts):
        raise ItemError({"error": f"_bulk answered {len(items)} items"}, what="_bulk answer")
    outcomes: list[WriteOutcome] = []
    position = 0
    for part in parts:
        failed: dict[str, Mapping[str, Any]] = {}
        versions: dict[str, Version] = {}
        refused: set[str] = set()
        closed = False
        for key, wrapped in zip(part.ids, items[position : position + len(part.ids)], strict=True):
            item: Mapping[str, Any] = next(iter(wrapped.values()))
            status = item.get("status", 500)
            if status < 300:
                if part.versioned and "_seq_no" in item:
                    versions[key] = Version(item["_primary_term"], item["_seq_no"])
            elif part.conditional and status in (_CONFLICT, _NOT_FOUND):
                refused.add(key)
            elif not (part.missing_ok and status == _NOT_FOUND):
                failed[key] = item
                closed = closed or refused_by_write_block(item)
        position += len(part.ids)
        outcomes.append(WriteOutcome(failed, versions, frozenset(refused), closed))
    return outcomes


def _error_type(error: object) -> object:
    return error.get("type") if isinstance(error, Mapping) else error


def _value(document: Mapping[str, Any]) -> str | None:
    source = document.get("_source") or {}
    value = source.get("value")
    return value if isinstance(value, str) or value is None else str(value)


def _found(document: Mapping[str, Any]) -> Found:
    text = _value(document)
    return Found(text, Version(document.get("_primary_term", 0), document.get("_seq_no", 0)))
