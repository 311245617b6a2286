"""Throw-away TLS certificates for the local servers of tests and benchmarks (openssl CLI).

:func:`make_certificates` writes a CA, a server certificate for ``127.0.0.1`` and
``localhost`` and a client certificate, both signed by the CA, valid for two days::

    certs = make_certificates(tmp_path)
    with start_redis(tls=certs, users={"alice": "pw"}) as redis:   # rediss://, ACL
        ...

Never use them outside a test: the keys are not encrypted and live beside the certificates.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stream_app.errors import LocalServiceError

_DAYS = "2"
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Certificates:
    """PEM files: a CA, and a server and a client certificate (with keys) it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path, ca_name: str = "fraudstream test CA") -> Certificates:
    """Write a new CA named ``ca_name`` and certificates it signed into ``directory``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise LocalServiceError(
            "openssl is not on PATH; install it (`apt-get install -y openssl`) to make test "
            "certificates"
        )
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        openssl, "req", "-x509", *_KEY, "-keyout", ca_key, "-out", ca, "-days", _DAYS,
        "-subj", f"/CN={ca_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    server = _signed(openssl, directory, "server", ca, ca_key, "serverAuth")
    client = _signed(openssl, directory, "client", ca, ca_key, "clientAuth")
    return Certificates(ca, *server, *client)


def _signed(
    openssl: str, directory: Path, name: str, ca: Path, ca_key: Path, usage: str
) -> tuple[Path, Path]:
    cert, key, request = (directory / f"{name}.{ext}" for ext in ("pem", "key", "csr"))
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
    )
    _openssl(openssl, "req", *_KEY, "-keyout", key, "-out", request,
             "-subj", f"/CN=fraudstream-{name}")  # fmt: skip
    _openssl(
        openssl, "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key,
        "-set_serial", str(secrets.randbits(63)), "-days", _DAYS, "-out", cert,
        "-extfile", extensions,
    )  # fmt: skip
    return cert, key


def _openssl(openssl: str, *args: str | Path) -> None:
    done = subprocess.run(  # noqa: S603 - argv built here, no shell
        [openssl, *map(str, args)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise LocalServiceError(
            f"openssl {args[0]} failed with code {done.returncode}: {done.stderr.strip()}"
        )
