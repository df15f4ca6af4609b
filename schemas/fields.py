"""Integer fields shared by the schemas: what the original service took as a number, and no more.

marshmallow's ``Integer`` loads anything ``int()`` accepts (``"+5"``, ``" 5"``, ``"1_000"``,
other scripts' digits) and any size; Elasticsearch then refuses what does not fit in a
``long``, which would surface as a 500. These fields refuse such input with a 400 instead.
"""

import re
from typing import Any

from marshmallow import fields

MAX_KEY_BYTES = 512
"""Elasticsearch refuses document ids longer than 512 bytes: no key may be longer."""

MAX_LONG = 2**63 - 1
"""The largest value Elasticsearch's ``long`` holds (timestamps, TTLs)."""

MAX_KEEP_ALIVE_MS = 24 * 60 * 60 * 1000
"""Elasticsearch's default ``search.max_keep_alive`` (24 h): the longest a scroll may live."""

_DIGITS = re.compile(r"[0-9]{1,19}")

MAX_STORAGE_ID_LENGTH = 128
STORAGE_ID_PATTERN = rf"[a-z0-9][a-z0-9._-]{{0,{MAX_STORAGE_ID_LENGTH - 1}}}"
"""Every storage id becomes part of index names (``<prefix>storage-history-<id>``, at most
255 bytes with the longest prefix) and of URLs: only characters both take as they are, in
any Elasticsearch version. Ids are otherwise opaque (UUIDs in production, ``read-only`` in
the original's suite)."""
STORAGE_ID_RULE = (
    f"a storage id is 1 to {MAX_STORAGE_ID_LENGTH} lower-case ASCII letters, digits, '-', '_' "
    "and '.', starting with a letter or a digit"
)
"""What an id may be, in the words of a 400 answer."""


class QueryInteger(fields.Integer):
    """An integer in a query string: ASCII digits only, at most ``MAX_LONG``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str) or not _DIGITS.fullmatch(value) or int(value) > MAX_LONG:
            raise self.make_error("invalid")
        result: int = super()._deserialize(value, attr, data, **kwargs)
        return result


class StrictInteger(fields.Integer):
    """An integer in JSON: refuses strings, fractions and booleans (which Python counts as
    ints), and numbers beyond ``MAX_LONG``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, int) and abs(value) > MAX_LONG):
            raise self.make_error("invalid")
        result: int = super()._deserialize(value, attr, data, **kwargs)
        return result
