"""Builds the configuration from defaults, a TOML file and the environment, in that order.

Every problem is reported as a ``ConfigError`` that names the property, so that start-up
can stop with one clear line instead of a traceback.
"""

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kv_storage.config.errors import ConfigError
from kv_storage.config.model import (
    AdminConfig,
    AppConfig,
    BatchLimits,
    CacheConfig,
    Config,
    ElasticsearchConfig,
    ServerConfig,
    WatchConfig,
)
from kv_storage.config.properties import PROPERTIES, PROPERTIES_BY_NAME
from kv_storage.config.secrets import read_secret_files
from kv_storage.config.tls import elasticsearch_security, server_tls
from kv_storage.model import Layout
from pipeline.config import HistoryConfig

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
    """The one configuration object of a process, built once at start-up."""
    layers = resolve_layers(path, os.environ if environ is None else environ)
    p = _parse_all(_merged(layers), _sources(layers))
    username, password = p["elasticsearch.auth.username"], p["elasticsearch.auth.password"]
    if (username is None) != (password is None):
        missing = "password" if password is None else "username"
        raise ConfigError(f"elasticsearch.auth.{missing}: must be set together with the other")
    security = elasticsearch_security(p)
    cert_file, key_file = server_tls(p)
    return Config(
        elasticsearch=ElasticsearchConfig(
            hosts=p["elasticsearch.uri"],
            username=username,
            password=password,
            index_prefix=p["elasticsearch.index-prefix"],
            scroll_page_size=p["elasticsearch.scroll.page-size"],
            scroll_keep_alive_s=p["elasticsearch.scroll.keep-alive"],
            scroll_max_open=p["elasticsearch.scroll.max-open"],
            scroll_max_open_per_storage=p["elasticsearch.scroll.max-open-per-storage"],
            key_max_bytes=p["elasticsearch.limit.key.max-size"],
            value_max_bytes=p["elasticsearch.limit.value.max-size"],
            batch=BatchLimits(
                max_operations=p["elasticsearch.batch.max-operations"],
                max_bytes=p["elasticsearch.batch.max-bytes"],
                max_in_flight=p["elasticsearch.batch.max-in-flight"],
                max_keys_per_storage=p["elasticsearch.batch.max-keys-per-storage"],
            ),
            layout=Layout(p["elasticsearch.layout"]),
            shared_shards=p["elasticsearch.shared.shards"],
            ca_file=security.ca_file,
            fingerprint=security.fingerprint,
            verify_certs=security.verify_certs,
            api_key=security.api_key,
        ),
        app=AppConfig(
            default_page_size=p["app.default-page-size"],
            request_timeout_s=p["app.request-timeout"],
            expiry_interval_s=p["app.expiry.interval"],
            docs_enabled=p["app.docs.enabled"],
            watch=WatchConfig(
                max_wait_s=p["app.watch.max-wait"],
                poll_interval_s=p["app.watch.poll-interval"],
                max_waiters=p["app.watch.max-waiters"],
                max_waiters_per_storage=p["app.watch.max-waiters-per-storage"],
            ),
            cache=CacheConfig(
                max_size=p["app.cache.max-size"],
                expiration_time_s=p["app.cache.expiration-time"],
                update_time_s=p["app.cache.update-time"],
            ),
            history=HistoryConfig(
                flush_size=p["app.history.flush-size"],
                flush_timeout_s=p["app.history.flush-timeout"],
                retry_limit=p["app.history.retry-limit"],
                buffer_size=p["app.history.buffer-size"],
                buffer_share_per_storage=history_share(p),
            ),
        ),
        server=ServerConfig(
            host=p["server.host"],
            port=p["server.port"],
            max_body_size=p["server.max-body-size"],
            max_json_body_size=p["server.max-json-body-size"],
            max_keys_per_request=p["server.max-keys-per-request"],
            access_log=p["server.access-log"],
            log_format=p["server.log-format"],
            header_timeout_s=p["server.header-timeout"],
            max_connections=p["server.max-connections"],
            tls_cert_file=cert_file,
            tls_key_file=key_file,
        ),
        admin=AdminConfig(token=p["admin.token"]),
    )
