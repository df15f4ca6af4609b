"""Secret properties read from files: ``KV_STORAGE_<NAME>_FILE``.

Container platforms hand secrets over as mounted files (``/run/secrets/...``) rather than as
environment variables, which leak into process listings, crash reports and ``inspect``
output. For every secret property, the variable named like the property's own with ``_FILE``
appended names a file whose content is the value.
"""

import base64
from collections.abc import Mapping
from pathlib import Path

from kv_storage.config.errors import ConfigError
from kv_storage.config.properties import PROPERTIES
from schemas.settings import Property

FILE_SUFFIX = "_FILE"


def file_variable(prop: Property) -> str:
    return prop.env_var + FILE_SUFFIX


def read_secret_files(environ: Mapping[str, str]) -> dict[str, object]:
    """Property name -> value, for the secret properties whose ``_FILE`` variable is set.

    Setting a secret both ways is refused rather than resolved: either choice would surprise
    the operator who set the other, and a stale plain variable is a secret left lying about.
    """
    values: dict[str, object] = {}
    for prop in PROPERTIES:
        if not prop.secret or file_variable(prop) not in environ:
            continue
        if prop.env_var in environ:
            raise ConfigError(
                f"{prop.name}: both {prop.env_var} and {file_variable(prop)} are set; "
                "set only one of them"
            )
        values[prop.name] = _read(prop, Path(environ[file_variable(prop)]))
    return values


def _read(prop: Property, path: Path) -> str:
    """The file's text with one trailing newline removed (``echo`` and editors add one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"{prop.name}: cannot read {path} (named by {file_variable(prop)}): {reason}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{prop.name}: {path} (named by {file_variable(prop)}) is not UTF-8 text"
        ) from None
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")


def encoded_api_key(value: str) -> str:
    """The form Elasticsearch expects after ``ApiKey``: base64 of ``id:key``.

    Operators copy either the ``encoded`` field of the create-API-key answer or its ``id`` and
    ``api_key`` fields; the encoded form never holds a colon, so ``id:key`` is recognised.
    """
    if ":" in value:
        return base64.b64encode(value.encode()).decode("ascii")
    return value
