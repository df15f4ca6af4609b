"""``kv-storage config``: the effective configuration as a TOML file that loads again.

Tables follow the property names, each value says where it came from in a comment, and
secrets are masked unless asked for (``--show-secrets``).
"""

import json
from collections.abc import Mapping, Set

MASK = "***"


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string, escapes alike


def as_toml(
    values: Mapping[str, object],
    sources: Mapping[str, str],
    secrets: Set[str],
    *,
    show_secrets: bool,
) -> str:
    lines: list[str] = []
    table: str | None = None
    for name in sorted(values, key=lambda n: (n.rsplit(".", 1)[0], n)):
        section, _, key = name.rpartition(".")
        if section != table:
            lines += ["", f"[{section}]"] if lines else [f"[{section}]"]
            table = section
        value = values[name]
        if value is None:
            lines.append(f"# {key} = (not set)  # {sources[name]}")
            continue
        if name in secrets and value and not show_secrets:
            value = MASK
        lines.append(f"{key} = {toml_value(value)}  # {sources[name]}")
    return "\n".join(lines) + "\n"
