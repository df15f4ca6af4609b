"""The history query actor: searches a storage's history a page at a time, or as a scroll.

A scroll holds nothing in Elasticsearch: each batch is a ``search_after`` on a stable sort,
and the signed token the client gets back (``kv_storage.scroll_tokens``) says where the next
batch begins. So a scroll costs Elasticsearch no context however long the client takes, any
instance can continue it, and a token is worth nothing to anyone it was not given to.

Each continuation checks again that the storage exists, is not expired, keeps history and
still has the secret the scroll began with: a deleted or re-keyed storage's scroll ends.
The actor owns the signing key, read once from Elasticsearch (``SigningKeys``).
"""

from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from kv_storage.actors.cache import CacheActor
from kv_storage.clock import now_ms
from kv_storage.errors import BadRequestError
from kv_storage.es.history import BeyondResultWindowError, HistoryPage, HistoryStore
from kv_storage.es.signing_keys import HISTORY_SCROLL, SigningKeys
from kv_storage.model import HistoryQuery, Storage, StorageType
from kv_storage.scroll_tokens import (
    InvalidTokenError,
    ScrollState,
    decode,
    encode,
    secret_digest,
)
from pipeline.mailbox import Actor, Ask

AnswerT = TypeVar("AnswerT")


@dataclass(frozen=True, slots=True)
class SearchHistory(Ask["HistoryAnswer"]):
    storage: Storage
    """Authorised by its secret (the handlers' access check)."""
    query: HistoryQuery
    page: int
    size: int
    scroll_ms: int | None
    """Open a scroll whose token lives this long; ``None`` for a page."""


@dataclass(frozen=True, slots=True)
class ContinueHistory(Ask["HistoryAnswer"]):
    token: str
    timeout_ms: int
    """How long the next token lives."""


HistoryQueryMessage = SearchHistory | ContinueHistory


@dataclass(frozen=True, slots=True)
class HistoryAnswer:
    total: int
    items: list[dict[str, Any]]
    page: int | None = None
    scroll_id: str | None = None


_ENDED = (
    "the scroll has ended: its storage no longer exists, no longer keeps history, or has a "
    "new secret key"
)


class HistoryQueryActor(Actor[HistoryQueryMessage]):
    def __init__(self, *, cache: CacheActor, store: HistoryStore, keys: SigningKeys) -> None:
        super().__init__(name="history-query")
        self._cache = cache
        self._store = store
        self._keys = keys
        self._key: bytes | None = None

    def answer_at_once(self, message: Ask[AnswerT]) -> Awaitable[AnswerT] | None:
        """Every search and scroll is a plain call in the caller's task: it waits for
        Elasticsearch, and the one thing it keeps (the signing key, once read) is set without
        awaiting; nothing needs the mailbox to serialise it."""
        return cast(Awaitable[AnswerT], self.handle(cast(HistoryQueryMessage, message)))

    async def handle(self, message: HistoryQueryMessage) -> HistoryAnswer:
        match message:
            case SearchHistory():
                return await self._search(message)
            case ContinueHistory(token, timeout_ms):
                return await self._continue(token, timeout_ms)

    async def _search(self, search: SearchHistory) -> HistoryAnswer:
        storage = search.storage
        if storage.type is StorageType.TEMP:
            raise BadRequestError(f"storage {storage.id} is a TEMP storage, which keeps no history")
        if not storage.history_enabled:
            raise BadRequestError(f"storage {storage.id} does not keep history")
        if search.scroll_ms is None:
            try:
                found = await self._store.search(
                    storage.location,
                    search.query,
                    offset=(search.page - 1) * search.size,
                    size=search.size,
                )
            except BeyondResultWindowError as error:
                raise BadRequestError(
                    f"page: page {search.page} of size {search.size} reaches beyond the first "
                    f"{error.window} records that paging can return; use scroll instead"
                ) from None
            return HistoryAnswer(total=found.total, items=found.items, page=search.page)
        key = await self._signing_key()
        batch = await self._store.first_batch(storage.location, search.query, size=search.size)
        begun = ScrollState(
            storage_id=storage.id,
            secret_digest=secret_digest(key, storage.secret_key),
            query=search.query,
            size=search.size,
            total=batch.total,
            returned=0,
            after=None,
            seq_no_bound=batch.seq_no_bound,
            expires_ms=0,
            finished=False,
        )
        return self._scroll_answer(key, begun, batch, lifetime_ms=search.scroll_ms)

    async def _continue(self, token: str, timeout_ms: int) -> HistoryAnswer:
        key = await self._signing_key()
        try:
            state = decode(key, token, now_ms=now_ms())
        except InvalidTokenError as error:
            raise BadRequestError(f"the scroll id is unknown or expired: {error}") from None
        storage = await self._cache.look_up(state.storage_id)
        if (
            storage is None
            or not storage.keeps_history
            or state.secret_digest != secret_digest(key, storage.secret_key)
        ):
            raise BadRequestError(_ENDED)
        if state.finished or state.after is None or state.seq_no_bound is None:
            return HistoryAnswer(total=state.total, items=[], scroll_id=token)
        batch = await self._store.next_batch(
            storage.location,
            state.query,
            size=state.size,
            after=state.after,
            seq_no_bound=state.seq_no_bound,
        )
        return self._scroll_answer(key, state, batch, lifetime_ms=timeout_ms)

    def _scroll_answer(
        self, key: bytes, state: ScrollState, batch: HistoryPage, *, lifetime_ms: int
    ) -> HistoryAnswer:
        returned = state.returned + len(batch.items)
        following = replace(
            state,
            returned=returned,
            after=batch.last_sort or state.after,
            expires_ms=now_ms() + lifetime_ms,
            # The last batch: its token answers no items, as a released scroll's would.
            finished=len(batch.items) < state.size or returned >= state.total,
        )
        token = encode(key, following)
        return HistoryAnswer(total=state.total, items=batch.items, scroll_id=token)

    async def _signing_key(self) -> bytes:
        if self._key is None:
            self._key = await self._keys.get(HISTORY_SCROLL)
        return self._key
