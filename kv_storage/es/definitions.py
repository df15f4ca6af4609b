"""Reads the index and template definitions of ``elasticsearch/``.

They exist once, as JSON files that ``elasticsearch/init.sh`` reads too. In a source checkout
they are found beside the package; an installed wheel carries a copy inside the package.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX_PLACEHOLDER = "__PREFIX__"

_CANDIDATES = (
    Path(__file__).parent / "definitions",  # installed wheel
    Path(__file__).resolve().parents[2] / "elasticsearch",  # source checkout
)


@dataclass(frozen=True, slots=True)
class Definition:
    base_name: str
    """The file name without ``.json``: the index or template name before the prefix."""
    body: dict[str, Any]


def definitions_dir() -> Path:
    for candidate in _CANDIDATES:
        if (candidate / "indices").is_dir() and (candidate / "templates").is_dir():
            return candidate
    raise FileNotFoundError("the Elasticsearch definitions (elasticsearch/*.json) are missing")


def _load(kind: str, prefix: str) -> list[Definition]:
    folder = definitions_dir() / kind
    return [
        Definition(path.stem, json.loads(path.read_text().replace(PREFIX_PLACEHOLDER, prefix)))
        for path in sorted(folder.glob("*.json"))
    ]


def index_definitions(prefix: str) -> list[Definition]:
    return _load("indices", prefix)


def template_definitions(prefix: str) -> list[Definition]:
    return _load("templates", prefix)
