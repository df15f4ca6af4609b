"""The history query actor: searches, pages and scrolls a storage's history.

Scroll answers carry a token of our own, the Elasticsearch scroll id with the count of records
already handed out: it lets any instance behind a load balancer continue the scroll, and
release it in Elasticsearch with the last batch.

The last batch carries a token of another shape, which says the scroll is over and holds only
the total: the original's clients ask again until a batch is empty, and that token answers
them with no items and no call to Elasticsearch. It needs no secret: forged, it answers an
empty batch with the total it was given, which tells nothing about any storage.
"""

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import BadRequestError as EsBadRequestError
from elasticsearch import NotFoundError as EsNotFoundError

from kv_storage.actors.access import authorise
from kv_storage.actors.base import Actor
from kv_storage.actors.cache import CacheActor
from kv_storage.errors import BadRequestError
from kv_storage.es.history import HistoryPage, HistoryStore
from kv_storage.model import HistoryQuery, StorageType
from schemas.fields import MAX_LONG


@dataclass(frozen=True, slots=True)
class SearchHistory:
    storage_id: str
    secret_key: str = field(repr=False)
    query: HistoryQuery
    page: int
    size: int
    scroll_ms: int | None


@dataclass(frozen=True, slots=True)
class ContinueHistory:
    scroll_id: str
    timeout_ms: int


HistoryQueryMessage = SearchHistory | ContinueHistory


@dataclass(frozen=True, slots=True)
class HistoryAnswer:
    total: int
    items: list[dict[str, Any]]
    page: int | None = None
    scroll_id: str | None = None


_UNKNOWN_SCROLL = "the scroll id is unknown or expired"


class HistoryQueryActor(Actor[HistoryQueryMessage]):
    def __init__(self, *, cache: CacheActor, store: HistoryStore, index_prefix: str) -> None:
        super().__init__(name="history-query", max_concurrency=1024)
        self._cache = cache
        self._store = store
        self._index_prefix = index_prefix

    async def handle(self, message: HistoryQueryMessage) -> HistoryAnswer:
        match message:
            case SearchHistory():
                return await self._search(message)
            case ContinueHistory(scroll_id, timeout_ms):
                return await self._continue(scroll_id, timeout_ms)

    async def _search(self, search: SearchHistory) -> HistoryAnswer:
        storage = await authorise(
            self._cache, search.storage_id, search.secret_key, index_prefix=self._index_prefix
        )
        if storage.type is StorageType.TEMP:
            raise BadRequestError(f"storage {storage.id} is a TEMP storage, which keeps no history")
        if not storage.history_enabled:
            raise BadRequestError(f"storage {storage.id} does not keep history")
        if search.scroll_ms is not None:
            opened = await self._store.open_scroll(
                storage.id, search.query, size=search.size, keep_alive_ms=search.scroll_ms
            )
            return await self._scroll_answer(opened, already_returned=0)
        try:
            found = await self._store.search(
                storage.id, search.query, offset=(search.page - 1) * search.size, size=search.size
            )
        except EsBadRequestError as error:
            if "result window is too large" not in str(error).lower():
                raise
            raise BadRequestError(
                f"page {search.page} of size {search.size} reaches beyond the first "
                f"{_window(error)} records that paging can return; use scroll instead"
            ) from None
        return HistoryAnswer(total=found.total, items=found.items, page=search.page)

    async def _continue(self, token: str, timeout_ms: int) -> HistoryAnswer:
        decoded = _decode(token)
        if isinstance(decoded, _Finished):
            return HistoryAnswer(total=decoded.total, items=[], scroll_id=token)
        es_scroll_id, returned = decoded
        try:
            batch = await self._store.continue_scroll(es_scroll_id, keep_alive_ms=timeout_ms)
        except (EsNotFoundError, EsBadRequestError):
            raise BadRequestError(_UNKNOWN_SCROLL) from None
        return await self._scroll_answer(batch, already_returned=returned)

    async def _scroll_answer(self, batch: HistoryPage, *, already_returned: int) -> HistoryAnswer:
        returned = already_returned + len(batch.items)
        es_scroll_id = batch.scroll_id
        if es_scroll_id and batch.items and returned < batch.total:
            token = _encode([es_scroll_id, returned])
        else:  # the last batch: nothing to keep in Elasticsearch
            if es_scroll_id:
                await self._store.release_scroll(es_scroll_id)
            token = _encode({"finished": batch.total})
        return HistoryAnswer(total=batch.total, items=batch.items, scroll_id=token)


@dataclass(frozen=True, slots=True)
class _Finished:
    """A scroll whose last batch was handed out (and released in Elasticsearch)."""

    total: int


def _encode(content: list[Any] | dict[str, Any]) -> str:
    """A list ``[Elasticsearch scroll id, records returned]`` for a scroll that goes on, an
    object ``{"finished": total}`` for one that is over: the shapes cannot be mistaken."""
    raw = json.dumps(content, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str) -> tuple[str, int] | _Finished:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        content = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise BadRequestError(_UNKNOWN_SCROLL) from None
    match content:
        case {"finished": int(total)} if len(content) == 1 and _is_count(total):
            return _Finished(total)
        case [str(es_scroll_id), int(returned)] if es_scroll_id and _is_count(returned):
            return es_scroll_id, returned
    raise BadRequestError(_UNKNOWN_SCROLL)


def _is_count(value: int) -> bool:
    """Booleans are ints to Python, and a JSON number may have any size."""
    return not isinstance(value, bool) and 0 <= value <= MAX_LONG


def _window(error: EsBadRequestError) -> str:
    text = str(error)
    marker = "less than or equal to: ["
    if marker in text:
        return text.split(marker, 1)[1].split("]", 1)[0]
    return "10000"
