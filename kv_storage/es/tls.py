"""Recognises TLS failures among the client's errors and says what they mean.

The client reports an untrusted certificate, a pinned fingerprint that does not match and a
host name the certificate does not cover as connection errors whose text is aiohttp's. An
operator needs to read "TLS", the address and the property to change instead; these messages
carry no credential (the client never puts one in an address or a TLS error).
"""

import ssl
from collections.abc import Iterator

from aiohttp import ClientConnectorError, ClientSSLError, ServerFingerprintMismatch
from elastic_transport import TlsError, TransportError

_HINT_TRUST = (
    "set elasticsearch.tls.ca-file to the CA that signed it, or pin it with "
    "elasticsearch.tls.fingerprint"
)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: the transport nests the node's errors in ``errors``."""
    yield error
    if isinstance(error, TransportError):
        for inner in error.errors:
            yield from _causes(inner)
    if error.__cause__ is not None:
        yield from _causes(error.__cause__)


def describe_tls(error: BaseException) -> str | None:
    """One line naming the TLS problem and the address, or ``None`` for other failures."""
    causes = list(_causes(error))
    for cause in causes:
        if isinstance(cause, ServerFingerprintMismatch):
            return (
                f"TLS problem with Elasticsearch at https://{cause.host}:{cause.port}: its "
                f"certificate's SHA-256 fingerprint is {cause.got.hex()}, not the pinned "
                f"{cause.expected.hex()} (elasticsearch.tls.fingerprint)"
            )
    for cause in causes:
        if isinstance(cause, ClientSSLError):
            return f"TLS problem with Elasticsearch at {_address(cause)}: {_reason(cause)}"
    if any(isinstance(cause, TlsError | ssl.SSLError) for cause in causes):
        return f"TLS problem with Elasticsearch: {error}"
    return None


def _address(error: ClientConnectorError) -> str:
    return f"https://{error.host}:{error.port}"


def _reason(error: ClientSSLError) -> str:
    inner = getattr(error, "certificate_error", None) or error.os_error
    if isinstance(inner, ssl.SSLCertVerificationError):
        message = inner.verify_message or inner.reason or str(inner)
        if "hostname mismatch" in message.lower() or "ip address mismatch" in message.lower():
            return (
                f"the certificate is not valid for this host name ({message.rstrip('.')}); "
                "use an address its subjectAltName lists"
            )
        return f"the certificate is not trusted ({message}); {_HINT_TRUST}"
    if isinstance(inner, ssl.SSLError):
        reason = inner.reason or str(inner)
        if reason == "WRONG_VERSION_NUMBER":
            return "the handshake failed (wrong version number): does it serve plain http://?"
        return f"the handshake failed ({reason})"
    return f"the handshake failed ({inner})"
