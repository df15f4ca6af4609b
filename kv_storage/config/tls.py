"""Checks of the TLS and credential properties that only make sense together.

Each property is valid on its own (see ``model``); here the combinations are checked, and
the files are opened the way the service will use them, so that a wrong file stops start-up
with the property's name instead of failing at the first request.
"""

import ssl
from dataclasses import replace

from kv_storage.config.errors import ConfigError
from kv_storage.config.model import ElasticsearchConfig, ServerConfig
from kv_storage.config.secrets import encoded_api_key


def elasticsearch_security(settings: ElasticsearchConfig) -> ElasticsearchConfig:
    """``settings`` once its TLS and credentials are checked together, the API key encoded."""
    ca_file, fingerprint, api_key = settings.ca_file, settings.fingerprint, settings.api_key
    if (settings.username is None) != (settings.password is None):
        missing = "password" if settings.password is None else "username"
        raise ConfigError(f"elasticsearch.auth.{missing}: must be set together with the other")
    if api_key is not None and (settings.username is not None or settings.password is not None):
        raise ConfigError(
            "elasticsearch.auth.api-key: set either it or elasticsearch.auth.username and "
            "elasticsearch.auth.password, not both"
        )
    plain = [host for host in settings.hosts if not host.startswith("https://")]
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
    if not settings.verify_certs and (ca_file is not None or fingerprint is not None):
        named = "ca-file" if ca_file is not None else "fingerprint"
        raise ConfigError(
            f"elasticsearch.tls.verify: false turns off the check that elasticsearch.tls.{named} "
            "asks for; remove one of them"
        )
    if ca_file is not None:
        _check_ca_file(ca_file)
    return settings if api_key is None else replace(settings, api_key=encoded_api_key(api_key))


def _check_ca_file(path: str) -> None:
    try:
        ssl.create_default_context(cafile=path)
    except OSError as error:  # ssl.SSLError is an OSError too
        if isinstance(error, ssl.SSLError):
            reason = "no PEM certificate in it"
        else:
            reason = error.strerror or str(error)
        raise ConfigError(f"elasticsearch.tls.ca-file: cannot use {path}: {reason}") from None


def server_tls(settings: ServerConfig) -> None:
    """The certificate and key files of the service's HTTPS listener are both given and
    usable, or neither is given."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if (cert is None) != (key is None):
        missing = "key-file" if key is None else "cert-file"
        given = "cert-file" if key is None else "key-file"
        raise ConfigError(
            f"server.tls.{missing}: must be set together with server.tls.{given} (HTTPS needs both)"
        )
    if cert is not None and key is not None:
        server_ssl_context(cert, key)  # the files are checked now, not at the first connection


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
