"""History scroll tokens: what a client holds between two batches of a history scroll.

A scroll is paged with ``search_after`` on a stable sort, so Elasticsearch keeps nothing
between batches; the token carries everything the next batch needs (the storage, the query,
where the last batch ended) and is signed with HMAC-SHA256 under a key only the service
instances know. It is the only credential of ``POST /history``, so:

- it cannot be forged or altered: any change breaks the signature, and a token that fails
  verification is refused before anything is asked of Elasticsearch;
- it is bound to its storage and to that storage's secret at the time it was made (a digest
  under the same key, not the secret): a deleted or re-keyed storage's scroll ends;
- it expires ``scroll`` (or the continuation's ``timeout``) milliseconds after it was made.

Its content is readable (base64 of JSON): the holder knows its own query; nothing in it is
secret.
"""

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from kv_storage.model import HistoryQuery

_VERSION = 1
_MAX_TOKEN_CHARS = 64 * 1024
"""Query keys come from a URL (a few KB); a longer token is not one of ours."""


class InvalidTokenError(Exception):
    """Not a token this service made, altered, or expired."""


@dataclass(frozen=True, slots=True)
class ScrollState:
    storage_id: str
    secret_digest: str
    """Binds the token to the storage's secret when it was made (see ``secret_digest``)."""
    query: HistoryQuery
    size: int
    total: int
    returned: int
    """Records handed out so far."""
    after: list[Any] | None
    """The sort values of the last record handed out; ``None`` before the first."""
    seq_no_bound: int | None
    """Records written after the scroll began have a higher ``_seq_no`` and are left out,
    as a scroll's snapshot would; ``None`` when nothing matched."""
    expires_ms: int
    finished: bool
    """The last batch was handed out: continuing answers no items."""


def secret_digest(key: bytes, secret: str) -> str:
    return hmac.new(key, b"storage-secret\0" + secret.encode(), hashlib.sha256).hexdigest()[:32]


def encode(key: bytes, state: ScrollState) -> str:
    query = state.query
    content = {
        "v": _VERSION,
        "s": state.storage_id,
        "d": state.secret_digest,
        "q": {
            "k": list(query.keys),
            "o": list(query.operations),
            "f": query.start_ms,
            "t": query.end_ms,
            "s": [[name, descending] for name, descending in query.sort],
        },
        "n": state.size,
        "N": state.total,
        "r": state.returned,
        "a": state.after,
        "b": state.seq_no_bound,
        "e": state.expires_ms,
        "x": state.finished,
    }
    payload = json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()
    return f"{_b64(payload)}.{_b64(_sign(key, payload))}"


def decode(key: bytes, token: str, *, now_ms: int) -> ScrollState:
    """The state a token carries, if this service signed it and it has not expired."""
    if len(token) > _MAX_TOKEN_CHARS or token.count(".") != 1:
        raise InvalidTokenError("not a scroll id of this service")
    encoded_payload, encoded_signature = token.split(".")
    try:
        payload, signature = _unb64(encoded_payload), _unb64(encoded_signature)
    except (binascii.Error, ValueError):
        raise InvalidTokenError("not a scroll id of this service") from None
    if not hmac.compare_digest(signature, _sign(key, payload)):
        raise InvalidTokenError("not a scroll id of this service")
    try:
        state = _state(json.loads(payload))
    except (ValueError, KeyError, TypeError):
        # Signed by us, yet unreadable: a format of another version.
        raise InvalidTokenError("a scroll id of another version of this service") from None
    if state.expires_ms <= now_ms:
        raise InvalidTokenError("the scroll has expired")
    return state


def _state(content: dict[str, Any]) -> ScrollState:
    if content["v"] != _VERSION:
        raise ValueError("another version")
    query = content["q"]
    return ScrollState(
        storage_id=str(content["s"]),
        secret_digest=str(content["d"]),
        query=HistoryQuery(
            keys=tuple(query["k"]),
            operations=tuple(query["o"]),
            start_ms=query["f"],
            end_ms=query["t"],
            sort=tuple((str(name), bool(descending)) for name, descending in query["s"]),
        ),
        size=int(content["n"]),
        total=int(content["N"]),
        returned=int(content["r"]),
        after=content["a"],
        seq_no_bound=content["b"],
        expires_ms=int(content["e"]),
        finished=bool(content["x"]),
    )


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, b"history-scroll\0" + payload, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
