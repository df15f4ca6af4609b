"""The lifecycle actor: creates, changes and deletes storages in the registry.

It serves the original's management endpoints (TEMP TTL and deletion, authorised by the
storage's secret), the administration API and the ``kv-storage storage`` command alike.
Read-modify-write is optimistic: a write over a version someone else changed is retried on a
fresh read, after a short random pause, until ``retry_for_s`` has passed. Changes of one
storage through this actor go one at a time, so only other processes make a write stale.
After each change the local cache forgets the storage; other instances learn of it from the
registry poll.
"""

import asyncio
import contextlib
import random
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar, cast

from kv_storage.actors.cache import CacheActor, Forget
from kv_storage.clock import now_ms
from kv_storage.errors import (
    BadRequestError,
    ConflictError,
    InsufficientStorageError,
    NotFoundError,
)
from kv_storage.es.moving import StorageCopy
from kv_storage.es.registry import (
    EntryExistsError,
    EntryPage,
    Registry,
    RegistryEntry,
    StaleEntryError,
)
from kv_storage.es.retirement import ShardLimitError, StorageIndices
from kv_storage.model import Layout, Storage, StorageType, is_storage_id
from pipeline.mailbox import Actor, Ask
from schemas.fields import MAX_LONG, STORAGE_ID_RULE

AnswerT = TypeVar("AnswerT")

_MOVE_PAGE = 500
_FIRST_BACKOFF_S = 0.005
_MAX_BACKOFF_S = 0.2


class _NotExpiredError(Exception):
    pass


_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class UpdateTtl(Ask[RegistryEntry]):
    storage: Storage
    """Authorised by its secret (the handlers' access check)."""
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class DeleteTemp(Ask[RegistryEntry]):
    storage: Storage
    """Authorised by its secret (the handlers' access check)."""


@dataclass(frozen=True, slots=True)
class ExpireTemp(Ask[RegistryEntry | None]):
    """Marks a TEMP storage deleted if it is still expired at ``now_ms``."""

    storage_id: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class CreateStorage(Ask[RegistryEntry]):
    type: StorageType
    history_enabled: bool = False
    account: str | None = None
    name: str | None = None
    description: str | None = None
    vm: str | None = None
    ttl_ms: int | None = None
    storage_id: str | None = None
    """An import's (``kv-storage import``): the id the storage had; ``None``: a new one (a
    VM's is its ``vm``)."""
    secret_key: str | None = None
    """An import's: the secret the storage had; ``None``: a new one."""
    expiration_timestamp_ms: int | None = None
    """An import's TEMP storage: when it expires, as it did before; ``None``: now + TTL."""


def create_command(body: Mapping[str, Any]) -> CreateStorage:
    """The command for a body that ``schemas.management.CreateStorageSchema`` loaded (from the
    administration API or the command line)."""
    return CreateStorage(
        type=StorageType(body["type"]),
        history_enabled=body["historyEnabled"],
        account=body.get("account"),
        name=body.get("name"),
        description=body.get("description"),
        vm=body.get("vm"),
        ttl_ms=body.get("ttl"),
    )


@dataclass(frozen=True, slots=True)
class ShowStorage(Ask[RegistryEntry]):
    storage_id: str


@dataclass(frozen=True, slots=True)
class ListStorages(Ask[EntryPage]):
    account: str
    page: int
    size: int


@dataclass(frozen=True, slots=True)
class DeleteStorage(Ask[RegistryEntry]):
    storage_id: str


@dataclass(frozen=True, slots=True)
class RotateSecret(Ask[RegistryEntry]):
    storage_id: str


@dataclass(frozen=True, slots=True)
class MoveStorage(Ask["MoveReport"]):
    """Moves a storage from its own indices into the shared ones (``kv-storage storage
    move``)."""

    storage_id: str


@dataclass(frozen=True, slots=True)
class MoveReport:
    storage_id: str
    outcome: str
    """``moved``, or ``shared already``."""
    keys: int = 0
    records: int = 0
    seconds: float = 0.0


class HistoryDiscards(Protocol):
    """The history pipeline, as the lifecycle actor needs it: a deleted storage's records
    still waiting there must not be written (they would re-create its history index)."""

    def discard(self, storage_id: str) -> None: ...


LifecycleMessage = (
    UpdateTtl
    | DeleteTemp
    | ExpireTemp
    | CreateStorage
    | ShowStorage
    | ListStorages
    | DeleteStorage
    | RotateSecret
    | MoveStorage
)


class LifecycleActor(Actor[LifecycleMessage]):
    def __init__(
        self,
        *,
        registry: Registry,
        indices: StorageIndices,
        cache: CacheActor | None,
        history_buffer: HistoryDiscards | None = None,
        retry_for_s: float = 10.0,
        now_ms: Callable[[], int] = now_ms,
        layout: Layout = Layout.PER_STORAGE,
        copy: StorageCopy | None = None,
        revocation_s: float = 0.0,
    ) -> None:
        """``retry_for_s``: how long a change keeps retrying over concurrent writes of other
        processes before it answers 409 (the service passes ``app.request-timeout``).
        ``now_ms``: the time TEMP expirations start from (the cluster's clock). ``layout``:
        that of the storages it creates (``elasticsearch.layout``). ``copy`` moves storages
        into the shared layout; ``revocation_s`` is how long a registry change takes to reach
        every instance (``config.revocation_s``), which a move waits for, twice."""
        super().__init__(name="lifecycle")
        self._registry = registry
        self._indices = indices
        self._cache = cache
        self._history_buffer = history_buffer
        self._retry_for_s = retry_for_s
        self._now_ms = now_ms
        self._layout = layout
        self._copy = copy
        self._revocation_s = revocation_s
        self._changing: dict[str, tuple[asyncio.Lock, int]] = {}

    def answer_at_once(self, message: Ask[AnswerT]) -> Awaitable[AnswerT] | None:
        """Every change is a plain call in the caller's task: each is a read-modify-write of
        the registry, retried over concurrent writers, and changes of one storage wait for
        each other (``_one_at_a_time``, the state this actor owns, taken without awaiting).
        The mailbox serialising them all would make every change wait for a move of minutes."""
        return cast(Awaitable[AnswerT], self.handle(cast(LifecycleMessage, message)))

    async def handle(
        self, message: LifecycleMessage
    ) -> "RegistryEntry | EntryPage | MoveReport | None":
        match message:
            case UpdateTtl(storage, ttl_ms):
                _require_temp(storage)
                return await self._change(
                    storage.id, lambda entry: _with_ttl(entry, ttl_ms, self._now_ms())
                )
            case DeleteTemp(storage):
                _require_temp(storage)
                return await self._delete(storage.id)
            case ExpireTemp(storage_id, now):
                return await self._expire(storage_id, now)
            case CreateStorage():
                return await self._create(message)
            case ShowStorage(storage_id):
                return await self._existing(storage_id)
            case ListStorages(account, page, size):
                return await self._registry.of_account(account, offset=(page - 1) * size, size=size)
            case DeleteStorage(storage_id):
                return await self._delete(storage_id)
            case RotateSecret(storage_id):
                return await self._change(storage_id, _with_new_secret)
            case MoveStorage(storage_id):
                return await self._move(storage_id)

    async def _existing(self, storage_id: str) -> RegistryEntry:
        if not is_storage_id(storage_id):
            raise BadRequestError(f"{storage_id!r} is not a storage id: {STORAGE_ID_RULE}")
        entry = await self._registry.read(storage_id)
        if entry is None:
            raise NotFoundError(f"storage {storage_id} does not exist")
        return entry

    async def _change(
        self, storage_id: str, change: Callable[[RegistryEntry], RegistryEntry]
    ) -> RegistryEntry:
        """Applies ``change`` to the live storage, again on a fresh read if it raced.

        Retries back off (random, growing, capped) so that processes writing one storage
        at once spread out rather than collide again in step.
        """
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._retry_for_s
        backoff_s = _FIRST_BACKOFF_S
        attempts = 0
        async with self._one_at_a_time(storage_id):
            while True:
                attempts += 1
                entry = await self._existing(storage_id)
                if entry.deleted:
                    raise NotFoundError(f"storage {storage_id} does not exist")
                try:
                    written = await self._registry.write(change(entry))
                except StaleEntryError:
                    pause_s = random.uniform(0, backoff_s)
                    if loop.time() + pause_s >= give_up_at:
                        break
                    await asyncio.sleep(pause_s)
                    backoff_s = min(2 * backoff_s, _MAX_BACKOFF_S)
                    continue
                await self._forget(storage_id)
                return written
        raise ConflictError(
            f"storage {storage_id} was changed by others at the same time, {attempts} times in "
            f"{self._retry_for_s:g} s; nothing was changed, try again"
        )

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, storage_id: str) -> AsyncIterator[None]:
        """Serialises this actor's changes of one storage (the lock lives while it is used)."""
        lock, users = self._changing.get(storage_id, (asyncio.Lock(), 0))
        self._changing[storage_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._changing[storage_id]
            if users == 1:
                del self._changing[storage_id]
            else:
                self._changing[storage_id] = (lock, users - 1)

    async def _delete(self, storage_id: str) -> RegistryEntry:
        entry = await self._change(storage_id, lambda entry: replace(entry, deleted=True))
        await self._deleted(entry)
        return entry

    async def _deleted(self, entry: RegistryEntry) -> None:
        """After the registry says deleted, before the deletion is answered (the expiry sweep
        removes the data later). History buffered here is not even sent.

        Per-storage indices are closed to writes, so a write through an instance that has
        not seen the deletion yet is refused (``kv_storage.es.retirement``). A shared index
        cannot be closed for one storage: such a write (within the revocation bound) lands,
        and goes with the purge, which waits until no late write can come."""
        if self._history_buffer is not None:
            self._history_buffer.discard(entry.id)
        if entry.layout is Layout.SHARED:
            return
        keeps_history = entry.history_enabled and entry.type is not StorageType.TEMP
        await self._indices.close_to_writes(
            entry.id, create_missing=True, keeps_history=keeps_history
        )

    async def _expire(self, storage_id: str, now: int) -> RegistryEntry | None:
        def expire(entry: RegistryEntry) -> RegistryEntry:
            expiration = entry.expiration_timestamp_ms
            if entry.type is not StorageType.TEMP or expiration is None or expiration > now:
                raise _NotExpiredError
            return replace(entry, deleted=True)

        try:
            entry = await self._change(storage_id, expire)
        except (_NotExpiredError, NotFoundError):
            return None  # its TTL was extended meanwhile, or someone deleted it first
        await self._deleted(entry)
        return entry

    async def _create(self, command: CreateStorage) -> RegistryEntry:
        storage_id = command.vm if command.type is StorageType.VM else command.storage_id
        if storage_id is None and command.type is not StorageType.VM:
            storage_id = str(uuid.uuid4())
        if storage_id is None or not is_storage_id(storage_id):
            field = "vm" if command.type is StorageType.VM else "id"
            raise BadRequestError(
                f"{field}: {storage_id!r} cannot name a storage: {STORAGE_ID_RULE}"
            )
        expiration = command.expiration_timestamp_ms
        if command.type is StorageType.TEMP and command.ttl_ms is not None and expiration is None:
            expiration = _expiration(self._now_ms(), command.ttl_ms)
        entry = RegistryEntry(
            id=storage_id,
            type=command.type,
            deleted=False,
            history_enabled=command.history_enabled and command.type is not StorageType.TEMP,
            secret_key=command.secret_key or _new_secret(),
            account=command.account,
            name=command.name,
            description=command.description,
            ttl_ms=command.ttl_ms if command.type is StorageType.TEMP else None,
            expiration_timestamp_ms=expiration,
            layout=self._layout,
        )
        if entry.layout is Layout.PER_STORAGE:
            await self._make_indices(entry)
        try:
            created = await self._registry.create(entry)
        except EntryExistsError:
            raise ConflictError(f"storage {storage_id} exists already") from None
        await self._forget(storage_id)  # a cached miss must not hide the new storage
        return created

    async def _make_indices(self, entry: RegistryEntry) -> None:
        """A per-storage storage's indices, before its registry document: a cluster at its
        shard limit refuses the storage now (507), not its first write later."""
        if await self._registry.read(entry.id) is not None:
            raise ConflictError(f"storage {entry.id} exists already")
        try:
            await self._indices.make(entry.id, keeps_history=entry.history_enabled)
        except ShardLimitError as error:
            raise InsufficientStorageError(
                "Elasticsearch holds no more shards (cluster.max_shards_per_node per data "
                f"node): {error.reason}. A storage in the per-storage layout needs an index of "
                "its own, two with history; storages in the shared layout need none "
                '(elasticsearch.layout = "shared")'
            ) from None

    async def _move(self, storage_id: str) -> "MoveReport":
        """Into the shared layout, while the service serves it:

        1. the registry marks it ``moving`` (still in its own indices): every instance, once
           it has seen that (``revocation_s``), answers its writes 503 and its reads as ever,
           and the writes it had under way have landed by then;
        2. its keys and history are copied into the shared indices (idempotent);
        3. the registry names the shared layout, without ``moving``: reads and writes go
           there, on every instance within ``revocation_s``, during which the old indices
           still answer the reads of those that have not seen it (they hold the same);
        4. then the old indices go.

        Cut short anywhere, running it again goes on from where it stopped (a storage marked
        ``moving`` is copied again, over what was copied). A copy that fails rolls back: the
        storage stays in its own indices, written again, and what was copied is purged."""
        if self._copy is None:
            raise RuntimeError("this lifecycle actor was made without a copier")
        started = asyncio.get_running_loop().time()
        entry = await self._existing(storage_id)
        if entry.deleted:
            raise NotFoundError(f"storage {storage_id} does not exist")
        if entry.layout is Layout.SHARED and not entry.moving:
            return MoveReport(storage_id, "shared already")
        if not entry.moving:
            await self._change(storage_id, lambda e: replace(e, moving=True))
            await asyncio.sleep(self._revocation_s)
        try:
            copied = await self._copy.into_shared(storage_id)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._change(storage_id, lambda e: replace(e, moving=False))
                await self._indices.purge(storage_id, page_size=_MOVE_PAGE)
            raise
        await self._change(storage_id, lambda e: replace(e, layout=Layout.SHARED, moving=False))
        await asyncio.sleep(self._revocation_s)
        await self._indices.drop(storage_id)
        seconds = asyncio.get_running_loop().time() - started
        return MoveReport(storage_id, "moved", copied.keys, copied.records, round(seconds, 3))

    async def _forget(self, storage_id: str) -> None:
        if self._cache is not None:
            await self._cache.ask(Forget((storage_id,)))


def _require_temp(storage: Storage) -> None:
    if storage.type is not StorageType.TEMP:
        raise BadRequestError(f"storage {storage.id} is not a TEMP storage")


def _with_ttl(entry: RegistryEntry, ttl_ms: int, now: int) -> RegistryEntry:
    """The original's rule: the expiration moves by the difference of the TTLs."""
    old_ttl = entry.ttl_ms or 0
    start = (entry.expiration_timestamp_ms or now + old_ttl) - old_ttl
    return replace(entry, ttl_ms=ttl_ms, expiration_timestamp_ms=_expiration(start, ttl_ms))


def _expiration(start_ms: int, ttl_ms: int) -> int:
    """``start_ms + ttl_ms``, refused (400) when Elasticsearch's ``long`` cannot hold it."""
    expiration = start_ms + ttl_ms
    if expiration > MAX_LONG:
        raise BadRequestError(
            f"ttl: {ttl_ms} ms puts the expiration beyond the largest timestamp ({MAX_LONG} ms); "
            f"the most is {MAX_LONG - start_ms}"
        )
    return expiration


def _with_new_secret(entry: RegistryEntry) -> RegistryEntry:
    return replace(entry, secret_key=_new_secret())


def _new_secret() -> str:
    return secrets.token_urlsafe(_SECRET_BYTES)
