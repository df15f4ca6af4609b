"""Where a storage's documents are: its indices, the routing of its documents, their ids and
the filter that keeps a search to it, in either layout (``kv_storage.model.Layout``).

In the per-storage layout a storage has indices of its own, its documents' ids are its keys,
and a search of its index sees nothing else. In the shared layout every storage's documents
are in the shared indices: each carries the storage's id in a field of its own (``storage``)
and is routed by it, so that a storage's documents are on one shard and a search of them
asks that shard alone; a data document's id is derived from the storage's id and the key,
within Elasticsearch's 512 bytes for the longest key (a SHA-256 of the key's UTF-8, so that
keys of any length, ``/`` and all, make ids of one length).
"""

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kv_storage.es.names import IndexNames
from kv_storage.model import Layout, Location

STORAGE_FIELD = "storage"
"""The field of a shared-layout document that names its storage."""


@dataclass(frozen=True, slots=True)
class Placement:
    storage_id: str
    data_index: str
    history_index: str
    routing: str | None
    """``None`` in the per-storage layout: its indices hold nothing else."""

    @property
    def shared(self) -> bool:
        return self.routing is not None

    def data_id(self, key: str) -> str:
        if self.routing is None:
            return key
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        return f"{self.storage_id}/{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"

    def tagged(self, source: Mapping[str, Any]) -> dict[str, Any]:
        """``source`` as this storage's document: with its storage's id when shared."""
        return {STORAGE_FIELD: self.storage_id, **source} if self.shared else dict(source)

    def query(self, *clauses: Mapping[str, Any]) -> dict[str, Any]:
        """A query of ``clauses`` (all must hold; none: every document) among this storage's
        documents only."""
        filters = [dict(clause) for clause in clauses]
        if self.shared:
            filters.append({"term": {STORAGE_FIELD: self.storage_id}})
        return {"bool": {"filter": filters}} if filters else {"match_all": {}}

    def search_options(self, index: str) -> dict[str, Any]:
        """The index of a search of this storage's documents, and its routing (one shard)."""
        return {"index": index, "routing": self.routing} if self.shared else {"index": index}


def place(names: IndexNames, location: Location) -> Placement:
    if location.layout is Layout.SHARED:
        return Placement(
            location.storage_id,
            names.shared_data,
            names.shared_history,
            routing=location.storage_id,
        )
    return Placement(
        location.storage_id,
        names.data(location.storage_id),
        names.history(location.storage_id),
        routing=None,
    )
