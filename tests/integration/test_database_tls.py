"""Database TLS, verified, against the project's own PostgreSQL: a test CA made once under the
state directory signs the certificate of a TLS front that negotiates TLS as PostgreSQL does and
forwards to the local server (whose embedded build has no OpenSSL: flourish/local/tls.py). A
client with `sslmode=verify-full` and that CA connects over TLS; with another CA, or to a host name
the certificate does not name, it is refused before any credential is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from flourish.local.tls import TlsFront, local_tls, make_ca
from shared.settings import Settings
from shared.store.db import create_engine


@pytest.fixture
async def front(stack_settings: Settings) -> AsyncIterator[TlsFront]:
    server = make_url(stack_settings.database_url)
    async with TlsFront(local_tls(stack_settings.state_dir), (server.host or "127.0.0.1", server.port or 5432)) as tls:
        yield tls


def tls_url(settings: Settings, front: TlsFront, *, host: str = "localhost", ca: Path | None = None,
            mode: str = "verify-full") -> str:
    url = make_url(settings.database_url).set(host=host, port=front.port).update_query_dict(
        {"sslmode": mode, "sslrootcert": str(ca or local_tls(settings.state_dir).ca_file)})
    return url.render_as_string(hide_password=False)


async def _connects(database_url: str) -> bool:
    """Connect through the service's own engine (shared/store/db.py) and run a query."""
    engine = create_engine(Settings(database_url=database_url, environment="development"), pool_size=1)
    try:
        async with engine.connect() as conn:
            return bool((await conn.execute(text("SELECT 1"))).scalar() == 1)
    finally:
        await engine.dispose()


async def test_verify_full_with_the_local_ca_connects_over_tls(stack_settings: Settings, front: TlsFront) -> None:
    assert await _connects(tls_url(stack_settings, front))
    assert front.handshakes == 1  # over TLS: the front takes nothing else
    # The same URL in libpq's form, as tools and the consent service's raw pool take it.
    conn = await asyncpg.connect(Settings(database_url=tls_url(stack_settings, front),
                                          environment="development").sync_database_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    assert front.handshakes == 2


async def test_another_ca_is_refused(stack_settings: Settings, front: TlsFront, tmp_path: Path) -> None:
    _, stranger = make_ca("Not the server's CA")
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(stranger.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(Exception, match="certificate verify failed"):
        await _connects(tls_url(stack_settings, front, ca=other_ca))
    assert front.handshakes == 0  # the client gave up in the handshake: no password was sent
    with pytest.raises(Exception, match="certificate verify failed"):
        await asyncpg.connect(make_url(tls_url(stack_settings, front, ca=other_ca)).set(drivername="postgresql")
                              .render_as_string(hide_password=False))


async def test_a_host_name_the_certificate_does_not_name_is_refused(stack_settings: Settings, front: TlsFront) -> None:
    # The front listens on 127.0.0.1; its certificate names localhost only.
    with pytest.raises(Exception, match="certificate verify failed"):
        await _connects(tls_url(stack_settings, front, host="127.0.0.1"))
    # verify-ca checks the CA only: the same address is accepted (which is why production wants verify-full).
    assert await _connects(tls_url(stack_settings, front, host="127.0.0.1", mode="verify-ca"))


async def test_a_client_in_clear_is_refused_by_the_front(stack_settings: Settings, front: TlsFront) -> None:
    plain = make_url(stack_settings.database_url).set(host="localhost", port=front.port).update_query_dict(
        {"sslmode": "disable"})
    with pytest.raises((DBAPIError, OSError)):
        await _connects(plain.render_as_string(hide_password=False))
    assert front.handshakes == 0


def test_the_ca_is_made_once(stack_settings: Settings) -> None:
    before = local_tls(stack_settings.state_dir).ca_file.read_bytes()
    assert local_tls(stack_settings.state_dir).ca_file.read_bytes() == before
