"""Keys that sign what the service hands to clients (history scroll tokens), kept in
Elasticsearch so that every instance behind a load balancer signs and verifies alike.

A key is 32 random bytes, made once by ``kv-storage init`` (or ``init.sh``) or, on a cluster
initialised before keys existed, by the first instance that needs it. Creation is
create-only: of several instances racing, one key wins and all of them read that one.
Nothing a client sees is derived from it but signatures.
"""

import base64
import secrets

from elasticsearch import AsyncElasticsearch, BadRequestError, ConflictError, NotFoundError

from kv_storage.clock import now_ms
from kv_storage.es.definitions import index_definitions
from kv_storage.es.names import SIGNING_KEYS, IndexNames

HISTORY_SCROLL = "history-scroll"
"""The key of history scroll tokens."""

_KEY_BYTES = 32


class SigningKeys:
    def __init__(self, client: AsyncElasticsearch, names: IndexNames) -> None:
        self._client = client
        self._names = names

    async def get(self, name: str) -> bytes:
        """The key ``name``, made now if the cluster has none yet."""
        stored = await self._read(name)
        if stored is None:
            await self.ensure(name)
            stored = await self._read(name)
        if stored is None:
            raise RuntimeError(f"signing key {name} could not be read after it was created")
        return stored

    async def ensure(self, name: str) -> bool:
        """Makes the key ``name`` unless it exists; ``True`` if this call made it."""
        index = self._names.signing_keys
        await self._ensure_index(index)
        document = {
            "key": base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode(),
            "created": now_ms(),
        }
        try:
            await self._client.create(index=index, id=name, document=document, refresh=True)
        except ConflictError:
            return False
        return True

    async def _read(self, name: str) -> bytes | None:
        try:
            found = await self._client.get(index=self._names.signing_keys, id=name)
        except NotFoundError:
            return None
        return base64.b64decode(found["_source"]["key"])

    async def _ensure_index(self, index: str) -> None:
        """With its strict layout, not one a first document would guess."""
        if await self._client.indices.exists(index=index):
            return
        (definition,) = (
            d for d in index_definitions(self._names.prefix) if d.base_name == SIGNING_KEYS
        )
        try:
            await self._client.indices.create(index=index, **definition.body)
        except BadRequestError as error:
            if error.error != "resource_already_exists_exception":
                raise
