"""Builds the configuration from defaults, a TOML file and the environment, in that order.

Every problem is reported as a ``ConfigError`` that names the property, so that start-up
can stop with one clear line instead of a traceback.
"""

import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from kv_storage.config.errors import ConfigError
from kv_storage.config.model import Config
from kv_storage.config.properties import PROPERTIES, PROPERTIES_BY_NAME
from kv_storage.config.secrets import read_secret_files
from kv_storage.config.tls import elasticsearch_security, server_tls
from schemas.settings import build

CONFIG_PATH_ENV = "KV_STORAGE_CONFIG"
PLATFORM_PORT_ENV = "PORT"
ENVIRONMENT_SOURCE = "environment"
SECRET_FILE_SOURCE = "secret files"

__all__ = ["CONFIG_PATH_ENV", "ConfigError", "load_config", "resolve_values"]


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def read_file(path: Path) -> dict[str, object]:
    """Property name -> raw value, for the properties the file sets."""
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path}: not found") from None
    except OSError as error:
        raise ConfigError(f"configuration file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"configuration file {path}: invalid TOML: {error}") from None
    values = _flatten(document)
    unknown = sorted(set(values) - set(PROPERTIES_BY_NAME))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown property (in {path})")
    return values


def read_environment(environ: Mapping[str, str]) -> dict[str, object]:
    """The properties set by ``KV_STORAGE_*`` variables (secrets' ``..._FILE`` twins are a
    layer of their own, ``read_secret_files``: both set is an error it reports)."""
    return {prop.name: environ[prop.env_var] for prop in PROPERTIES if prop.env_var in environ}


def read_platform_port(environ: Mapping[str, str]) -> dict[str, object]:
    """``server.port`` from ``PORT``, the variable container platforms (Cloud Run, Heroku, ...)
    set for the port a service must listen on, as the original's container honoured it."""
    port = environ.get(PLATFORM_PORT_ENV, "").strip()
    return {"server.port": port} if port else {}


def resolve_layers(
    path: Path | None, environ: Mapping[str, str]
) -> list[tuple[str, dict[str, object]]]:
    """Where raw values come from, weakest first, each layer named: the defaults, ``PORT``
    (only ``server.port``), the file, the ``KV_STORAGE_*`` environment."""
    layers: list[tuple[str, dict[str, object]]] = [
        ("default", {prop.name: prop.default for prop in PROPERTIES}),
        (PLATFORM_PORT_ENV, read_platform_port(environ)),
    ]
    if path is None and environ.get(CONFIG_PATH_ENV):
        path = Path(environ[CONFIG_PATH_ENV])
    if path is not None:
        layers.append((f"file {path}", read_file(path)))
    layers.append((ENVIRONMENT_SOURCE, read_environment(environ)))
    layers.append((SECRET_FILE_SOURCE, read_secret_files(environ)))
    return layers


def resolve_values(path: Path | None, environ: Mapping[str, str]) -> dict[str, object]:
    """Raw value of every property: the environment wins over the file, the file over
    ``PORT`` (for ``server.port``), that over the defaults."""
    return _merged(resolve_layers(path, environ))


def value_sources(path: Path | None, environ: Mapping[str, str]) -> dict[str, str]:
    """For each property, where its value comes from: ``default``, ``PORT``, ``file <path>``,
    or the name of its ``KV_STORAGE_*`` variable."""
    return _sources(resolve_layers(path, environ))


def _merged(layers: list[tuple[str, dict[str, object]]]) -> dict[str, object]:
    values: dict[str, object] = {}
    for _, layer in layers:
        values.update(layer)
    return values


def _sources(layers: list[tuple[str, dict[str, object]]]) -> dict[str, str]:
    sources: dict[str, str] = {}
    for source, layer in layers:
        for name in layer:
            env_var = PROPERTIES_BY_NAME[name].env_var
            if source == ENVIRONMENT_SOURCE:
                sources[name] = env_var
            elif source == SECRET_FILE_SOURCE:
                sources[name] = f"{env_var}_FILE"
            else:
                sources[name] = source
    return sources


def _parse_all(values: Mapping[str, object], sources: Mapping[str, str]) -> dict[str, Any]:
    """Every property parsed; all problems are reported together, one clause each, naming
    where a bad value came from (a value set by ``PORT`` reads as ``server.port``)."""
    parsed: dict[str, Any] = {}
    problems: list[str] = []
    for prop in PROPERTIES:
        raw = values[prop.name]
        if raw is None:
            problems.append(f"{prop.name}: not set (set it in the file or {prop.env_var})")
            continue
        try:
            parsed[prop.name] = prop.parse(raw)
        except ValueError as error:
            source = sources.get(prop.name, "default")
            where = "" if source == "default" else f" (from {source})"
            problems.append(f"{prop.name}: {error}{where}")
    if problems:
        raise ConfigError("; ".join(problems))
    return parsed


HISTORY_SHARE_OF_BUFFER = 10
"""By default one storage may hold a tenth of the history buffer: ten storages flooding at
once still leave room, and one storage's flood of 10,000-key multi-sets stays its own loss."""


def history_share(p: Mapping[str, Any]) -> int:
    """``app.history.buffer-share-per-storage``, its default (0) made a tenth of the buffer."""
    buffer_size: int = p["app.history.buffer-size"]
    share: int = p["app.history.buffer-share-per-storage"]
    if share == 0:
        return max(1, buffer_size // HISTORY_SHARE_OF_BUFFER)
    if share > buffer_size:
        raise ConfigError(
            f"app.history.buffer-share-per-storage: must be at most app.history.buffer-size "
            f"({buffer_size}), got {share}"
        )
    return share


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The one configuration object of a process, built once at start-up.

    Every field is its property's parsed value (``schemas.settings.build``); what one property
    cannot say alone is a step of its own. The history share is resolved before the build,
    since ``HistoryConfig`` refuses the property's 0 (it stands for a tenth of the buffer);
    the checks of properties that go together come after it, on the typed sections."""
    layers = resolve_layers(path, os.environ if environ is None else environ)
    parsed = _parse_all(_merged(layers), _sources(layers))
    parsed["app.history.buffer-share-per-storage"] = history_share(parsed)
    config = build(Config, parsed)
    config = replace(config, elasticsearch=elasticsearch_security(config.elasticsearch))
    server_tls(config.server)
    return config
