"""Durations written the way the original service's HOCON configuration wrote them: in the
configuration, and in requests that take one (a blocking read's ``wait``).

Operators migrating from the original copy values such as ``"30 seconds"``, ``"1 hour"`` or
``"1m"``; a plain number means milliseconds, which is also what the original's ``ttl`` and
``timeout`` parameters use.
"""

import re
from typing import Any

from marshmallow import fields

_UNIT_SECONDS: dict[str, float] = {}
for _names, _seconds in (
    (("ms", "milli", "millis", "millisecond", "milliseconds"), 0.001),
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("m", "min", "mins", "minute", "minutes"), 60.0),
    (("h", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
):
    for _name in _names:
        _UNIT_SECONDS[_name] = _seconds

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration_s(value: object) -> float:
    """Return the duration in seconds; raise ``ValueError`` with a reason otherwise."""
    if isinstance(value, bool):
        raise ValueError('expected a duration such as 30000, "30 seconds" or "1m"')
    if isinstance(value, int | float):
        milliseconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration; write milliseconds or a number with a unit "
                'such as "30 seconds", "1m" or "500ms"'
            )
        number, unit = match.groups()
        if not unit:
            milliseconds = float(number)
        else:
            try:
                return float(number) * _UNIT_SECONDS[unit.lower()]
            except KeyError:
                known = "ms, s, m, h, d (or their names, such as seconds)"
                raise ValueError(f"unknown unit {unit!r} in {value!r}; use {known}") from None
    else:
        raise ValueError('expected a duration such as 30000, "30 seconds" or "1m"')
    return milliseconds / 1000.0


class Duration(fields.String):
    """A duration in a query string, as the configuration takes them: seconds (a float).
    Documented as a string (milliseconds, or a number with a unit)."""

    default_error_messages = {  # noqa: RUF012
        "invalid": 'Not a duration: give milliseconds or a number with a unit, such as "30s".'
    }

    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> float:
        try:
            seconds = parse_duration_s(value)
        except ValueError:
            raise self.make_error("invalid") from None
        return seconds
