"""The asynchronous client, on aiohttp: one ``AsyncClient`` per service address, a
``storage`` per storage (its id and secret), ``admin`` for the administration API.

Paths are built here with every key percent-encoded (``.`` and ``..`` too, which HTTP
libraries would otherwise resolve away), so any key a storage can hold can be named. Every
answer that is not a success raises a ``KvStorageError`` of its status, with the service's
message and the request id.
"""

import asyncio
import json
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from yarl import URL

from kv_storage_client.errors import (
    CompareAndSetError,
    NotFoundError,
    PreconditionFailedError,
    error_for,
)
from kv_storage_client.models import (
    Change,
    Credentials,
    HistoryPage,
    HistoryRecord,
    StorageInfo,
    StorageType,
    Versioned,
)

SECRET_KEY = "Secret-Key"
TEXT = "text/plain; charset=utf-8"
DEFAULT_TIMEOUT_S = 30.0
"""Of one request (a blocking read adds its wait)."""
SCROLL_VALIDITY_MS = 60_000
"""How long a history scroll stays valid between two batches."""


def quote_key(key: str) -> str:
    """A key as one path segment: every reserved character encoded, ``.`` too."""
    encoded = quote(key, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


class _Http:
    """The requests and the reading of answers, shared by the storage and admin clients."""

    def __init__(self, url: str, session: aiohttp.ClientSession | None, timeout_s: float) -> None:
        self._base = url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._timeout_s = timeout_s

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        text_body: str | None = None,
        expected: Iterable[int] = (200,),
        extra_timeout_s: float = 0.0,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """The status, headers and body of an answer whose status is ``expected``; an error
        of its status otherwise."""
        url = URL(self._base + path, encoded=True)
        if params:
            url = url.update_query(params)
        sent = dict(headers or {})
        data: bytes | None = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        elif text_body is not None:
            data = text_body.encode()
            sent["Content-Type"] = TEXT
        timeout = aiohttp.ClientTimeout(total=self._timeout_s + extra_timeout_s)
        async with self._open().request(
            method, url, headers=sent, data=data, timeout=timeout
        ) as response:
            body = await response.read()
            answer_headers = response.headers.copy()  # case-insensitive
            if response.status in expected:
                return response.status, answer_headers, body
            raise _error(response.status, answer_headers, body)


def _error(status: int, headers: Mapping[str, str], body: bytes) -> Exception:
    try:
        message = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace")[:200] or f"HTTP {status}"
    retry = headers.get("Retry-After")
    retry_after_s = float(retry) if retry and retry.isdigit() else None
    return error_for(status, message, headers.get("X-Request-ID"), retry_after_s)


def _json(body: bytes) -> Any:
    return json.loads(body)


def _next_link(headers: Mapping[str, str]) -> str | None:
    """The path of ``Link: <...>; rel="next"``, if the answer has one."""
    link = headers.get("Link", "")
    for part in link.split(","):
        target, _, rel = part.partition(";")
        if 'rel="next"' in rel:
            return target.strip().strip("<>")
    return None


class AsyncStorage:
    """One storage's operations, authorised by its secret."""

    def __init__(self, http: _Http, storage_id: str, secret_key: str) -> None:
        self._http = http
        self.id = storage_id
        self._auth = {SECRET_KEY: secret_key}

    def _path(self, operation: str, key: str | None = None) -> str:
        path = f"/{operation}/{quote(self.id, safe='')}"
        return path if key is None else f"{path}/{quote_key(key)}"

    async def get(self, key: str) -> str | None:
        """The key's value; ``None`` when it is missing."""
        found = await self.get_versioned(key)
        return None if found is None else found.value

    async def get_versioned(self, key: str) -> Versioned | None:
        """The value with its version, for a conditional write; ``None`` when missing."""
        try:
            _, headers, body = await self._http.request(
                "GET", self._path("get", key), headers=self._auth
            )
        except NotFoundError as error:
            if _storage_is_gone(error):
                raise
            return None
        return Versioned(body.decode(), headers.get("ETag", ""))

    async def get_many(self, keys: Iterable[str]) -> dict[str, str | None]:
        """Each key's value, ``None`` for missing keys (one request)."""
        _, _, body = await self._http.request(
            "POST", self._path("get"), headers=self._auth, json_body=list(keys)
        )
        found: dict[str, str | None] = _json(body)
        return found

    async def set(
        self, key: str, value: str, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        """Writes the value; answers its new version. ``if_match``: only if the key is at that
        version; ``if_absent``: only if it does not exist. A condition that does not hold
        raises ``PreconditionFailedError`` and changes nothing."""
        headers = dict(self._auth)
        if if_match is not None:
            headers["If-Match"] = if_match
        if if_absent:
            headers["If-None-Match"] = "*"
        _, answer, _ = await self._http.request(
            "PUT", self._path("set", key), headers=headers, text_body=value
        )
        return answer.get("ETag", "")

    async def set_many(self, pairs: Mapping[str, Any]) -> dict[str, bool]:
        """Writes every pair (one request, not a transaction); ``False`` for a pair refused."""
        _, _, body = await self._http.request(
            "PUT", self._path("set"), headers=self._auth, json_body=dict(pairs)
        )
        written: dict[str, bool] = _json(body)
        return written

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Deletes the key (a missing key too); ``if_match``: only if it is at that version."""
        headers = dict(self._auth)
        if if_match is not None:
            headers["If-Match"] = if_match
        await self._http.request("DELETE", self._path("delete", key), headers=headers)

    async def delete_many(self, keys: Iterable[str]) -> dict[str, bool]:
        _, _, body = await self._http.request(
            "POST", self._path("delete"), headers=self._auth, json_body=list(keys)
        )
        deleted: dict[str, bool] = _json(body)
        return deleted

    async def list(self) -> list[str]:
        """Every key, in one answer (for large storages, ``keys`` pages by prefix)."""
        _, _, body = await self._http.request("GET", self._path("list"), headers=self._auth)
        listed: list[str] = _json(body)
        return listed

    async def keys(
        self, prefix: str = "", *, after: str | None = None, page_size: int = 1000
    ) -> AsyncGenerator[str, None]:
        """The keys starting with ``prefix``, in byte order, a page at a time (each page one
        request, following the answers' ``Link``)."""
        params = {"prefix": prefix, "limit": str(page_size)}
        if after is not None:
            params["after"] = after
        path: str | None = self._path("list")
        query: Mapping[str, str] | None = params
        while path is not None:
            _, headers, body = await self._http.request(
                "GET", path, headers=self._auth, params=query
            )
            for key in _json(body):
                yield key
            path, query = _next_link(headers), None

    async def clear(self) -> None:
        """Deletes every key; ``ConflictError`` when keys written meanwhile were kept."""
        await self._http.request("POST", self._path("clear"), headers=self._auth)

    async def compare_and_set(
        self, key: str, update: Callable[[str | None], str], *, attempts: int = 10
    ) -> Versioned:
        """Reads the key, writes ``update(value)`` only if nobody wrote it meanwhile, and
        tries again (up to ``attempts``) when somebody did: a safe read-modify-write."""
        for _ in range(attempts):
            current = await self.get_versioned(key)
            value = update(None if current is None else current.value)
            try:
                if current is None:
                    etag = await self.set(key, value, if_absent=True)
                else:
                    etag = await self.set(key, value, if_match=current.etag)
            except PreconditionFailedError:
                continue
            return Versioned(value, etag)
        raise CompareAndSetError(
            f"{key!r} changed under each of {attempts} attempts", status_code=412
        )

    async def watch(
        self, key: str, *, wait_s: float = 60.0, missing_poll_s: float = 1.0
    ) -> AsyncGenerator[Change, None]:
        """The key's changes from now on, as they happen (blocking reads, each up to
        ``wait_s``). While the key is missing there is no version to wait on: it is read
        again every ``missing_poll_s``. Ends with ``NotFoundError`` if the storage goes."""
        current = await self.get_versioned(key)
        etag = None if current is None else current.etag
        while True:
            if etag is None:
                await asyncio.sleep(missing_poll_s)
                found = await self.get_versioned(key)
                if found is not None:
                    etag = found.etag
                    yield Change(key, found.value, etag)
                continue
            try:
                status, headers, body = await self._http.request(
                    "GET",
                    self._path("get", key),
                    headers={**self._auth, "If-None-Match": etag},
                    params={"wait": f"{wait_s:g}s"},
                    expected=(200, 304),
                    extra_timeout_s=wait_s,
                )
            except NotFoundError as error:
                if _storage_is_gone(error):
                    raise
                etag = None
                yield Change(key, None, None)
                continue
            if status == 200:
                etag = headers.get("ETag", "")
                yield Change(key, body.decode(), etag)

    async def history_page(
        self, *, page: int = 1, size: int | None = None, **filters: Any
    ) -> HistoryPage:
        """One page of the history (``keys``, ``operations``, ``start``, ``end``, ``sort``)."""
        params = _history_filters(filters)
        params["page"] = str(page)
        if size is not None:
            params["size"] = str(size)
        _, _, body = await self._http.request(
            "GET", self._path("history"), headers=self._auth, params=params
        )
        answer = _json(body)
        items = [HistoryRecord.of(item) for item in answer["items"]]
        return HistoryPage(answer["total"], answer["page"], answer["size"], items)

    async def history(
        self, *, batch_size: int = 1000, **filters: Any
    ) -> AsyncGenerator[HistoryRecord, None]:
        """Every record that matches (same filters as ``history_page``), by a scroll: each
        exactly once, as they were when it began."""
        params = _history_filters(filters)
        params.update(scroll=str(SCROLL_VALIDITY_MS), size=str(batch_size))
        _, _, body = await self._http.request(
            "GET", self._path("history"), headers=self._auth, params=params
        )
        answer = _json(body)
        while answer["items"]:
            for item in answer["items"]:
                yield HistoryRecord.of(item)
            _, _, body = await self._http.request(
                "POST",
                "/history",
                json_body={"scrollId": answer["scrollId"], "timeout": SCROLL_VALIDITY_MS},
            )
            answer = _json(body)

    async def update_ttl(self, ttl_ms: int) -> None:
        """A TEMP storage's new TTL (its expiration moves by the difference)."""
        await self._http.request(
            "PUT", self._path("storage"), headers=self._auth, params={"ttl": str(ttl_ms)}
        )

    async def delete_storage(self) -> None:
        """Deletes a TEMP storage with its data."""
        await self._http.request("DELETE", self._path("storage"), headers=self._auth)


def _storage_is_gone(error: NotFoundError) -> bool:
    """A 404 of the storage itself, rather than of a key (the service says which)."""
    return "has no key" not in error.message


def _history_filters(filters: Mapping[str, Any]) -> dict[str, str]:
    known = {"keys", "operations", "start", "end", "sort"}
    unknown = set(filters) - known
    if unknown:
        raise TypeError(f"unknown history filters: {', '.join(sorted(unknown))}")
    params: dict[str, str] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if isinstance(value, list | tuple | set | frozenset):
            value = ",".join(str(item) for item in value)
        params[name] = str(value)
    return params


class AsyncAdmin:
    """The administration API (``/admin/``), authorised by the bearer token."""

    def __init__(self, http: _Http, token: str) -> None:
        self._http = http
        self._auth = {"Authorization": f"Bearer {token}"}

    async def create(
        self,
        storage_type: StorageType | str,
        *,
        account: str | None = None,
        name: str | None = None,
        description: str | None = None,
        history_enabled: bool | None = None,
        vm: str | None = None,
        ttl_ms: int | None = None,
    ) -> tuple[StorageInfo, Credentials]:
        """A new storage: its record, and its id and secret (shown only now)."""
        fields = {
            "type": StorageType(storage_type).value,
            "account": account,
            "name": name,
            "description": description,
            "historyEnabled": history_enabled,
            "vm": vm,
            "ttl": ttl_ms,
        }
        _, _, body = await self._http.request(
            "POST",
            "/admin/storages",
            headers=self._auth,
            json_body={key: value for key, value in fields.items() if value is not None},
            expected=(201,),
        )
        answer = _json(body)
        return StorageInfo.of(answer), Credentials(answer["id"], answer["secretKey"])

    async def get(self, storage_id: str) -> StorageInfo:
        _, _, body = await self._http.request(
            "GET", f"/admin/storages/{quote(storage_id, safe='')}", headers=self._auth
        )
        return StorageInfo.of(_json(body))

    async def list(
        self, account: str, *, page_size: int = 100
    ) -> AsyncGenerator[StorageInfo, None]:
        """An account's storages not deleted, most recently changed first."""
        page = 1
        while True:
            params = {"account": account, "page": str(page), "size": str(page_size)}
            _, _, body = await self._http.request(
                "GET", "/admin/storages", headers=self._auth, params=params
            )
            answer = _json(body)
            for item in answer["items"]:
                yield StorageInfo.of(item)
            if page * page_size >= answer["total"] or not answer["items"]:
                return
            page += 1

    async def rotate_secret(self, storage_id: str) -> Credentials:
        """A new secret; the old one stops working everywhere within seconds."""
        _, _, body = await self._http.request(
            "POST", f"/admin/storages/{quote(storage_id, safe='')}/secret-key", headers=self._auth
        )
        answer = _json(body)
        return Credentials(answer["id"], answer["secretKey"])

    async def delete(self, storage_id: str) -> StorageInfo:
        _, _, body = await self._http.request(
            "DELETE", f"/admin/storages/{quote(storage_id, safe='')}", headers=self._auth
        )
        return StorageInfo.of(_json(body))


class AsyncClient:
    """The client of one kv-storage service (or of a load balancer in front of several)."""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """``session``: an aiohttp session of the caller's, which ``close`` leaves open."""
        self._http = _Http(url, session, timeout_s)

    def storage(self, storage_id: str, secret_key: str) -> AsyncStorage:
        return AsyncStorage(self._http, storage_id, secret_key)

    def admin(self, token: str) -> AsyncAdmin:
        return AsyncAdmin(self._http, token)

    async def health(self) -> bool:
        """Whether the service answers (``/health``)."""
        status, _, _ = await self._http.request("GET", "/health", expected=(200, 500, 503))
        return status == 200

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()
