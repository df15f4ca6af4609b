"""Certificates for the tests' own TLS endpoints, made with openssl as an operator would."""

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str = "kv-storage test CA") -> Certificate:
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-sha256",
        "-subj", f"/CN={name}", "-keyout", "ca.key", "-out", "ca.crt",
        cwd=folder,
    )  # fmt: skip
    return Certificate(folder / "ca.crt", folder / "ca.key")


def make_server_certificate(
    ca: Certificate, folder: Path, san: str = "IP:127.0.0.1,DNS:localhost"
) -> Certificate:
    """A server certificate signed by ``ca`` for the names in ``san``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", str(ca.cert_file), "-CAkey",
        str(ca.key_file), "-CAcreateserial", "-days", "2", "-sha256",
        "-extfile", "server.ext", "-out", "server.crt",
        cwd=folder,
    )  # fmt: skip
    return Certificate(folder / "server.crt", folder / "server.key")
