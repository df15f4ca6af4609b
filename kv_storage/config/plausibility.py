"""Warnings for durations that are valid but surely not meant.

A duration without a unit is milliseconds, as the original's ``ttl`` and ``timeout`` were:
``KV_STORAGE_APP_REQUEST_TIMEOUT=3`` is 3 ms, which makes every request fail. Such a value
loads (a test may want it), but the commands say, naming the property and the rule.
"""

from collections.abc import Mapping

from kv_storage.config.properties import PROPERTIES_BY_NAME
from schemas.durations import parse_duration_s

LEAST_PLAUSIBLE_S: Mapping[str, float] = {
    "elasticsearch.scroll.keep-alive": 1.0,
    "app.request-timeout": 0.1,
    "app.cache.expiration-time": 0.1,
    "app.cache.update-time": 0.1,
    "app.history.flush-timeout": 0.1,
    "app.expiry.interval": 0.1,
}


def implausible_durations(values: Mapping[str, object]) -> list[str]:
    """One line for each duration given as a bare number of milliseconds below its floor."""
    warnings: list[str] = []
    for name, floor_s in LEAST_PLAUSIBLE_S.items():
        raw = values.get(name)
        if not _bare_number(raw):
            continue
        seconds = parse_duration_s(raw)
        if seconds < floor_s:
            prop = PROPERTIES_BY_NAME[name]
            warnings.append(
                f"{name} is {raw} ms ({prop.env_var} or the file): a duration without a unit "
                f"is milliseconds; give the unit ({raw}s, {raw} seconds) if seconds were meant"
            )
    return warnings


def _bare_number(raw: object) -> bool:
    if isinstance(raw, bool):
        return False
    if isinstance(raw, int | float):
        return True
    return isinstance(raw, str) and raw.strip().replace(".", "", 1).isdigit()
