"""Checks of the TLS and credential properties that only make sense together.

Each property is valid on its own (see ``properties``); here the combinations are checked, and
the files are opened the way the service will use them, so that a wrong file stops start-up
with the property's name instead of failing at the first request.
"""

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kv_storage.config.errors import ConfigError
from kv_storage.config.secrets import encoded_api_key


@dataclass(frozen=True, slots=True)
class ElasticsearchSecurity:
    ca_file: str | None
    fingerprint: str | None
    verify_certs: bool
    api_key: str | None


def elasticsearch_security(p: Mapping[str, Any]) -> ElasticsearchSecurity:
    """TLS and credentials for Elasticsearch, from the parsed properties."""
    hosts: tuple[str, ...] = p["elasticsearch.uri"]
    ca_file: str | None = p["elasticsearch.tls.ca-file"]
    fingerprint: str | None = p["elasticsearch.tls.fingerprint"]
    verify: bool = p["elasticsearch.tls.verify"]
    api_key: str | None = p["elasticsearch.auth.api-key"]

    if api_key is not None and (
        p["elasticsearch.auth.username"] is not None or p["elasticsearch.auth.password"] is not None
    ):
        raise ConfigError(
            "elasticsearch.auth.api-key: set either it or elasticsearch.auth.username and "
            "elasticsearch.auth.password, not both"
        )
    plain = [host for host in hosts if not host.startswith("https://")]
    for name, value in (
        ("elasticsearch.tls.ca-file", ca_file),
        ("elasticsearch.tls.fingerprint", fingerprint),
    ):
        if value is not None and plain:
            raise ConfigError(
                f"{name}: only applies to https:// addresses, and elasticsearch.uri has {plain[0]}"
            )
    if ca_file is not None and fingerprint is not None:
        raise ConfigError(
            "elasticsearch.tls.fingerprint: set either it (pin the node's certificate) or "
            "elasticsearch.tls.ca-file (trust a CA), not both"
        )
    if not verify and (ca_file is not None or fingerprint is not None):
        named = "ca-file" if ca_file is not None else "fingerprint"
        raise ConfigError(
            f"elasticsearch.tls.verify: false turns off the check that elasticsearch.tls.{named} "
            "asks for; remove one of them"
        )
    if ca_file is not None:
        _check_ca_file(ca_file)
    return ElasticsearchSecurity(
        ca_file=ca_file,
        fingerprint=fingerprint,
        verify_certs=verify,
        api_key=None if api_key is None else encoded_api_key(api_key),
    )


def _check_ca_file(path: str) -> None:
    try:
        ssl.create_default_context(cafile=path)
    except OSError as error:  # ssl.SSLError is an OSError too
        if isinstance(error, ssl.SSLError):
            reason = "no PEM certificate in it"
        else:
            reason = error.strerror or str(error)
        raise ConfigError(f"elasticsearch.tls.ca-file: cannot use {path}: {reason}") from None


def server_tls(p: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The certificate and key files of the service's HTTPS listener, or neither."""
    cert: str | None = p["server.tls.cert-file"]
    key: str | None = p["server.tls.key-file"]
    if (cert is None) != (key is None):
        missing = "key-file" if key is None else "cert-file"
        given = "cert-file" if key is None else "key-file"
        raise ConfigError(
            f"server.tls.{missing}: must be set together with server.tls.{given} (HTTPS needs both)"
        )
    if cert is not None and key is not None:
        server_ssl_context(cert, key)  # the files are checked now, not at the first connection
    return cert, key


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The TLS context of the service's listener (TLS 1.2 at least, Python's ciphers)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for name, path in (("cert-file", cert_file), ("key-file", key_file)):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(f"server.tls.{name}: cannot read {path}: {reason}") from None
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as error:
        raise ConfigError(
            f"server.tls.cert-file: {cert_file} and server.tls.key-file {key_file} are not a "
            f"PEM certificate and its private key ({error.reason or error})"
        ) from None
    return context
