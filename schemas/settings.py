"""A configuration setting, declared once: on the dataclass field that holds its value.

``page_size: int = setting("elasticsearch.scroll.page-size", 1000, between(1, 10_000), "...")``
is the whole definition of a setting: its property name (and from it the ``KV_STORAGE_...``
variable), its default, how a raw value (a TOML value or an environment string) is checked
and converted, its description and whether it is a secret. The :class:`Property` rides in the
field's metadata; :func:`properties_of` lists every one of a section (a dataclass, its nested
sections walked in field order), and :func:`build` makes a section from the values parsed by
property name. So the configuration model, the loader, the variable names and the generated
documentation cannot disagree: a setting added is written once, as a field.

It lives here, not in ``kv_storage.config``, because the history pipeline declares its
settings the same way (``pipeline.config``), and ``pipeline`` may import ``schemas`` but not
``kv_storage`` (``tests/test_layering.py``); ``schemas`` already holds the duration grammar the
configuration is written in (``schemas.durations``). The parsers below are the generic ones;
the service's own (URIs, index prefixes, ...) stay with the service (``kv_storage.config``).
"""

import dataclasses
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from schemas.durations import parse_duration_s

T = TypeVar("T")
S = TypeVar("S")

_PROPERTY = "setting"
"""The metadata key of a field's :class:`Property`."""


@dataclass(frozen=True, slots=True)
class Property:
    name: str
    """Dotted, as in the TOML file's tables: ``app.history.flush-size``."""
    default: object
    """A raw value, as the file or the environment would give it (``"30 seconds"``); ``None``:
    the property must be set."""
    parse: Callable[[object], object]
    """A raw value to the field's value; ``ValueError`` with the reason when it is wrong."""
    description: str
    secret: bool = False
    """Masked by ``kv-storage config``, kept out of ``repr``, readable from a ``_FILE``."""

    @property
    def env_var(self) -> str:
        return "KV_STORAGE_" + re.sub(r"[.-]", "_", self.name).upper()


def setting(
    name: str,
    default: object,
    parse: Callable[[object], T],
    description: str,
    *,
    secret: bool = False,
) -> T:
    """A dataclass field holding the value of property ``name``.

    The field's own default is ``parse(default)``, so code that makes a section by hand gets
    the configured default (and a default its parser refuses fails at import, not at start-up);
    a property without a default (``None``) makes a field that must be given. A secret's field
    is left out of the section's ``repr``."""
    prop = Property(name, default, parse, description, secret)
    metadata = {_PROPERTY: prop}
    if default is None:
        return cast(T, dataclasses.field(repr=not secret, metadata=metadata))
    return dataclasses.field(default=parse(default), repr=not secret, metadata=metadata)


def property_of(field: dataclasses.Field[Any]) -> Property | None:
    """The property a field declares, if it is a setting."""
    prop = field.metadata.get(_PROPERTY)
    return prop if isinstance(prop, Property) else None


def _fields(section: type) -> list[tuple[str, Property | type]]:
    """Each field of ``section`` with its property, or with its type if it is a nested
    section; any other field is an error, so that no value can bypass the declarations."""
    if not dataclasses.is_dataclass(section):
        raise TypeError(f"{section.__qualname__} is not a dataclass")
    hints = typing.get_type_hints(section)
    declared: list[tuple[str, Property | type]] = []
    for field in dataclasses.fields(section):
        prop = property_of(field)
        kind = hints[field.name]
        if prop is not None:
            declared.append((field.name, prop))
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            declared.append((field.name, kind))
        else:
            raise TypeError(
                f"{section.__qualname__}.{field.name} is neither a setting() nor a section"
            )
    return declared


def properties_of(section: type) -> tuple[Property, ...]:
    """Every property of ``section`` and of its nested sections, depth first in field order
    (the order of the documentation's table and of the loader's list of problems)."""
    found: list[Property] = []
    for _, declared in _fields(section):
        found.extend([declared] if isinstance(declared, Property) else properties_of(declared))
    return tuple(found)


def build(section: type[S], values: Mapping[str, Any]) -> S:
    """``section`` with each field set to the parsed value of its property, nested sections
    built alike: the one mapping from property names to fields."""
    arguments = {
        name: values[declared.name] if isinstance(declared, Property) else build(declared, values)
        for name, declared in _fields(section)
    }
    return section(**arguments)


# Parsers of raw values: a TOML value, or the string of an environment variable.


def integer(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def at_least(minimum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        number = integer(value)
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def between(minimum: int, maximum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        number = integer(value)
        if not minimum <= number <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}, got {number}")
        return number

    return parse


def positive_duration(value: object) -> float:
    """Seconds, from the original's notation (``"30 seconds"``, ``"1m"``, milliseconds)."""
    seconds = parse_duration_s(value)
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


def one_of(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse


def text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def optional_text(value: object) -> str | None:
    """Empty is unset: an environment variable cannot be ``None``."""
    return text(value) or None
