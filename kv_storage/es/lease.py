"""A lease in the registry lock index: lets one of many service instances own a periodic job.

The lock document keeps the original's layout (``locked``, ``timestamp``), which has no room
for an owner's name; ownership is the document version this process wrote last. An owner
renews by writing over that version; another instance takes the lease over only when it was
released or not renewed for ``duration_s``, and only over the version it read, so two
instances never both win.
"""

import contextlib

from elasticsearch import AsyncElasticsearch, ConflictError, NotFoundError

from kv_storage.clock import now_ms
from kv_storage.es.names import IndexNames


class Lease:
    def __init__(
        self, client: AsyncElasticsearch, names: IndexNames, *, name: str, duration_s: float
    ) -> None:
        self._client = client
        self._index = names.registry_lock
        self._name = name
        self._duration_ms = int(duration_s * 1000)
        self._version: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        return self._version is not None

    async def acquire(self) -> bool:
        """Takes or renews the lease; ``True`` while this process holds it."""
        try:
            current = await self._client.get(index=self._index, id=self._name)
        except NotFoundError:
            return await self._write(if_version=None)
        version = (current["_seq_no"], current["_primary_term"])
        source = current["_source"]
        mine = version == self._version
        free = (
            not source.get("locked")
            or now_ms() - int(source.get("timestamp", 0)) > self._duration_ms
        )
        if not (mine or free):
            self._version = None
            return False
        return await self._write(if_version=version)

    async def release(self) -> None:
        if self._version is None:
            return
        with contextlib.suppress(ConflictError):  # taken over already: nothing to release
            await self._client.index(
                index=self._index,
                id=self._name,
                document={"locked": False, "timestamp": now_ms()},
                if_seq_no=self._version[0],
                if_primary_term=self._version[1],
                refresh=True,
            )
        self._version = None

    async def _write(self, *, if_version: tuple[int, int] | None) -> bool:
        document = {"locked": True, "timestamp": now_ms()}
        try:
            if if_version is None:
                written = await self._client.create(
                    index=self._index, id=self._name, document=document, refresh=True
                )
            else:
                written = await self._client.index(
                    index=self._index,
                    id=self._name,
                    document=document,
                    if_seq_no=if_version[0],
                    if_primary_term=if_version[1],
                    refresh=True,
                )
        except ConflictError:
            self._version = None
            return False
        self._version = (written["_seq_no"], written["_primary_term"])
        return True


class Mark:
    """A point in time that outlives the process that set it, such as how far a periodic job
    got, so that the next owner of the job's lease goes on from there.

    It is a document of the lock index in that index's own layout: ``timestamp`` is the mark,
    ``locked`` is always false (it is no lock), so existing lock indices take it unchanged.
    """

    def __init__(self, client: AsyncElasticsearch, names: IndexNames, *, name: str) -> None:
        self._client = client
        self._index = names.registry_lock
        self._name = name

    async def read(self) -> int | None:
        """The mark in epoch ms, or ``None`` when none was ever set."""
        try:
            document = await self._client.get(index=self._index, id=self._name)
        except NotFoundError:
            return None
        return int(document["_source"].get("timestamp", 0))

    async def set(self, timestamp_ms: int) -> None:
        await self._client.index(
            index=self._index,
            id=self._name,
            document={"locked": False, "timestamp": timestamp_ms},
        )
