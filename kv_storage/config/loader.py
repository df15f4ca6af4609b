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
    CacheConfig,
    Config,
    ElasticsearchConfig,
    HistoryConfig,
    ServerConfig,
)
from kv_storage.config.properties import PROPERTIES, PROPERTIES_BY_NAME
from kv_storage.config.secrets import read_secret_files
from kv_storage.config.tls import elasticsearch_security, server_tls

CONFIG_PATH_ENV = "KV_STORAGE_CONFIG"

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
    """The properties set by ``KV_STORAGE_*`` variables, secrets also by ``..._FILE`` ones."""
    values: dict[str, object] = {
        prop.name: environ[prop.env_var] for prop in PROPERTIES if prop.env_var in environ
    }
    values.update(read_secret_files(environ))
    return values


def resolve_values(path: Path | None, environ: Mapping[str, str]) -> dict[str, object]:
    """Raw value of every property: the environment wins over the file, the file over defaults."""
    values: dict[str, object] = {prop.name: prop.default for prop in PROPERTIES}
    if path is None and environ.get(CONFIG_PATH_ENV):
        path = Path(environ[CONFIG_PATH_ENV])
    if path is not None:
        values.update(read_file(path))
    values.update(read_environment(environ))
    return values


def _parse_all(values: Mapping[str, object]) -> dict[str, Any]:
    """Every property parsed; all problems are reported together, one clause each."""
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
            problems.append(f"{prop.name}: {error}")
    if problems:
        raise ConfigError("; ".join(problems))
    return parsed


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The one configuration object of a process, built once at start-up."""
    p = _parse_all(resolve_values(path, os.environ if environ is None else environ))
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
            key_max_bytes=p["elasticsearch.limit.key.max-size"],
            value_max_bytes=p["elasticsearch.limit.value.max-size"],
            ca_file=security.ca_file,
            fingerprint=security.fingerprint,
            verify_certs=security.verify_certs,
            api_key=security.api_key,
        ),
        app=AppConfig(
            default_page_size=p["app.default-page-size"],
            request_timeout_s=p["app.request-timeout"],
            expiry_interval_s=p["app.expiry.interval"],
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
            ),
        ),
        server=ServerConfig(
            host=p["server.host"],
            port=p["server.port"],
            max_body_size=p["server.max-body-size"],
            access_log=p["server.access-log"],
            log_format=p["server.log-format"],
            tls_cert_file=cert_file,
            tls_key_file=key_file,
        ),
        admin=AdminConfig(token=p["admin.token"]),
    )
