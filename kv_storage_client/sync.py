"""The same client for code without an event loop: each call runs the asynchronous client's
on a loop of its own, in a thread of its own, so it works from any thread, also from one
whose own event loop is running (a notebook, a test)."""

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from kv_storage_client.aio import DEFAULT_TIMEOUT_S, AsyncAdmin, AsyncClient, AsyncStorage
from kv_storage_client.models import (
    Change,
    Credentials,
    HistoryPage,
    HistoryRecord,
    StorageInfo,
    StorageType,
    Versioned,
)

T = TypeVar("T")


async def _awaited(call: Awaitable[T]) -> T:
    return await call


class _Loop:
    """An event loop running in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kv-storage-client", daemon=True
        )
        self._thread.start()

    def run(self, call: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(_awaited(call), self._loop).result()

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(anext(items))
                except StopAsyncIteration:
                    return
        finally:
            closing = getattr(items, "aclose", None)
            if closing is not None and self._loop.is_running():
                self.run(closing())

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class Storage:
    """One storage's operations; see ``AsyncStorage`` for what each does."""

    def __init__(self, loop: _Loop, storage: AsyncStorage) -> None:
        self._loop = loop
        self._storage = storage
        self.id = storage.id

    def get(self, key: str) -> str | None:
        return self._loop.run(self._storage.get(key))

    def get_versioned(self, key: str) -> Versioned | None:
        return self._loop.run(self._storage.get_versioned(key))

    def get_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        return self._loop.run(self._storage.get_many(list(keys)))

    def set(
        self, key: str, value: str, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        return self._loop.run(self._storage.set(key, value, if_match=if_match, if_absent=if_absent))

    def set_many(self, pairs: Mapping[str, Any]) -> dict[str, bool]:
        return self._loop.run(self._storage.set_many(pairs))

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self._loop.run(self._storage.delete(key, if_match=if_match))

    def delete_many(self, keys: Iterable[str]) -> dict[str, bool]:
        return self._loop.run(self._storage.delete_many(list(keys)))

    def list(self) -> list[str]:
        return self._loop.run(self._storage.list())

    def keys(
        self, prefix: str = "", *, after: str | None = None, page_size: int = 1000
    ) -> Iterator[str]:
        return self._loop.iterate(self._storage.keys(prefix, after=after, page_size=page_size))

    def clear(self) -> None:
        self._loop.run(self._storage.clear())

    def compare_and_set(
        self, key: str, update: Callable[[str | None], str], *, attempts: int = 10
    ) -> Versioned:
        return self._loop.run(self._storage.compare_and_set(key, update, attempts=attempts))

    def watch(
        self, key: str, *, wait_s: float = 60.0, missing_poll_s: float = 1.0
    ) -> Iterator[Change]:
        return self._loop.iterate(
            self._storage.watch(key, wait_s=wait_s, missing_poll_s=missing_poll_s)
        )

    def history_page(
        self, *, page: int = 1, size: int | None = None, **filters: Any
    ) -> HistoryPage:
        return self._loop.run(self._storage.history_page(page=page, size=size, **filters))

    def history(self, *, batch_size: int = 1000, **filters: Any) -> Iterator[HistoryRecord]:
        return self._loop.iterate(self._storage.history(batch_size=batch_size, **filters))

    def update_ttl(self, ttl_ms: int) -> None:
        self._loop.run(self._storage.update_ttl(ttl_ms))

    def delete_storage(self) -> None:
        self._loop.run(self._storage.delete_storage())


class Admin:
    """The administration API; see ``AsyncAdmin``."""

    def __init__(self, loop: _Loop, admin: AsyncAdmin) -> None:
        self._loop = loop
        self._admin = admin

    def create(
        self, storage_type: StorageType | str, **fields: Any
    ) -> tuple[StorageInfo, Credentials]:
        return self._loop.run(self._admin.create(storage_type, **fields))

    def get(self, storage_id: str) -> StorageInfo:
        return self._loop.run(self._admin.get(storage_id))

    def list(self, account: str, *, page_size: int = 100) -> Iterator[StorageInfo]:
        return self._loop.iterate(self._admin.list(account, page_size=page_size))

    def rotate_secret(self, storage_id: str) -> Credentials:
        return self._loop.run(self._admin.rotate_secret(storage_id))

    def delete(self, storage_id: str) -> StorageInfo:
        return self._loop.run(self._admin.delete(storage_id))


class Client:
    """The synchronous client of one kv-storage service; close it (or use ``with``)."""

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._loop = _Loop()
        self._client = AsyncClient(url, timeout_s=timeout_s)

    def storage(self, storage_id: str, secret_key: str) -> Storage:
        return Storage(self._loop, self._client.storage(storage_id, secret_key))

    def admin(self, token: str) -> Admin:
        return Admin(self._loop, self._client.admin(token))

    def health(self) -> bool:
        return self._loop.run(self._client.health())

    def close(self) -> None:
        self._loop.run(self._client.close())
        self._loop.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
