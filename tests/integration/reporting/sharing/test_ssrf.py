"""No way into the trust's network through a webhook (issue 16 item 5), tried as a hostile agency
endpoint would: a host name whose DNS answers public at the check and private at the connect
(rebinding), every range that is not globally routable, a redirect, a certificate for another name.
Real receivers on loopback; 127.0.0.1 stands for "public" through the allow-list setting, 127.0.0.2
for the trust's private network."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from services.reporting.sharing import endpoints
from services.reporting.sharing.endpoints import networks, pinned_transport
from services.reporting.sharing.tables import agencies
from shared.auth import Role
from tests.integration.reporting.sharing.conftest import Receiver, Stack, eventually

PUBLIC, PRIVATE = "127.0.0.1", "127.0.0.2"


@asynccontextmanager
async def serving(app: Any, host: str, port: int = 0, **ssl_files: Any) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", **ssl_files))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: _started(server))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def _started(server: uvicorn.Server) -> bool:
    return server.started


def resolver(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]], then: dict[str, list[str]] | None = None,
             after: int = 0) -> list[str]:
    """A DNS server under the attacker's control: `answers` for the first `after` questions about a
    name, `then` from there on. Returns the log of names asked."""
    asked: list[str] = []

    async def lookup(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror("no such host")
        return (then or answers)[host] if then and asked.count(host) > after else answers[host]

    monkeypatch.setattr(endpoints, "lookup", lookup)
    return asked


async def _finished(stack: Stack, delivery_id: str) -> Any:
    row = await stack.delivery(delivery_id)
    return row if row is not None and row.status in ("failed", "delivered", "blocked") else None


@pytest.mark.parametrize("public_answers", [1, 2, 3])
async def test_a_rebinding_host_never_reaches_the_private_address(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, public_answers: int) -> None:
    """Answer public to the first questions (registration, the check before delivery), private
    afterwards (the connect): the delivery is refused and the private receiver hears nothing."""
    public, private = Receiver(), Receiver()
    async with serving(public, PUBLIC) as port, serving(private, PRIVATE, port):
        # Registered, and its endpoint verified, while the name is honest; then the DNS turns.
        resolver(monkeypatch, {"agency.test": [PUBLIC]})
        (pupil,) = await stack.consent.enrol()
        await stack.grant(pupil)
        agency = await stack.agency(f"http://agency.test:{port}/hooks")
        asked = resolver(monkeypatch, {"agency.test": [PUBLIC]}, then={"agency.test": [PRIVATE]}, after=public_answers - 1)
        delivery_id = (await stack.share(agency["agency_id"], pupil)).json()["delivery_id"]
        row = await eventually(lambda: _finished(stack, delivery_id), timeout=60)
    assert private.received == []
    tries = await stack.attempts(delivery_id)
    if public_answers == 1:
        assert row.status == "failed" and {t.error for t in tries} == {"endpoint_refused"}
    elif row.status == "failed":  # the check said public, a new connection asked again: the transport refused it
        assert public_answers == 2 and tries[0].error == "refused"
        assert {t.error for t in tries} <= {"refused", "endpoint_refused"}
    else:  # each connection resolves once and goes where that answer was vetted (a connection the
        # verification opened to the vetted address may be reused: it never asks the DNS again)
        assert row.status == "delivered" and len(public.received) == 1
    assert asked.count("agency.test") >= 1
    log = (await stack.client.get(f"/sharing/agencies/{agency['agency_id']}/deliveries", headers=stack.staff())).text
    assert PRIVATE not in log and PUBLIC not in log and "agency.test" not in log.replace(agency["endpoint_url"], "")


async def test_a_delivery_connects_to_the_vetted_address_with_the_agency_host_name(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = Receiver()
    async with serving(receiver, PUBLIC) as port:
        resolver(monkeypatch, {"agency.test": [PUBLIC]})
        (pupil,) = await stack.consent.enrol()
        await stack.grant(pupil)
        agency = await stack.agency(f"http://agency.test:{port}/hooks")
        delivery_id = (await stack.share(agency["agency_id"], pupil)).json()["delivery_id"]
        row = await eventually(lambda: _finished(stack, delivery_id), timeout=30)
    assert row.status == "delivered"
    assert receiver.received[0]["headers"]["host"] == f"agency.test:{port}"


NOT_GLOBAL = ["10.0.0.7", "172.16.5.4", "192.168.1.20", "127.0.0.2", "169.254.169.254", "100.64.0.1",
              "100.100.100.200", "168.63.129.16", "0.0.0.0", "198.18.0.1", "192.0.0.192",
              "::1", "fe80::1", "fd00:ec2::254", "::ffff:10.0.0.7", "::ffff:127.0.0.1",
              "2002:a00:7::1", "2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "64:ff9b::a00:7",
              "64:ff9b::7f00:1", "64:ff9b:1::a00:7"]


async def test_every_range_that_is_not_globally_routable_is_refused(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """By literal address and by a host name that resolves to it, at registration: 422, nothing stored."""
    names = {f"h{i}.agency.test": [address] for i, address in enumerate(NOT_GLOBAL)}
    names["mixed.agency.test"] = [PUBLIC, "10.0.0.7"]  # one bad answer among good ones is enough
    resolver(monkeypatch, names)
    urls = [f"http://[{a}]:8080/hooks" if ":" in a else f"http://{a}/hooks" for a in NOT_GLOBAL]
    urls += [f"http://{name}/hooks" for name in names]
    for url in urls:
        response = await stack.client.post("/sharing/agencies", headers=stack.staff(Role.trust_admin), json={
            "category": "camhs", "organisation": "Somewhere", "endpoint_url": url})
        assert response.status_code == 422, (url, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    async with stack.engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(agencies).where(
            agencies.c.trust_id == stack.consent.trust_id))
    assert count == 0


@pytest.mark.parametrize("address", ["10.0.0.7", "100.64.0.1", "168.63.129.16", "2002:7f00:2::1", "64:ff9b::7f00:2",
                                     "::ffff:127.0.0.2", "2001:0:4136:e378:8000:63bf:80ff:fffd"])
async def test_a_registered_host_moved_into_a_refused_range_gets_nothing(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    """Registered while public; the DNS then points into a refused range: every try is refused and
    the log says only that."""
    receiver = Receiver()
    async with serving(receiver, PUBLIC) as port:
        resolver(monkeypatch, {"agency.test": [PUBLIC]})  # registered and verified while public
        (pupil,) = await stack.consent.enrol()
        await stack.grant(pupil)
        agency = await stack.agency(f"http://agency.test:{port}/hooks")
        resolver(monkeypatch, {"agency.test": [PUBLIC]}, then={"agency.test": [address]})
        delivery_id = (await stack.share(agency["agency_id"], pupil)).json()["delivery_id"]
        row = await eventually(lambda: _finished(stack, delivery_id), timeout=60)
    assert row.status == "failed" and receiver.received == []
    assert {t.error for t in await stack.attempts(delivery_id)} <= {"refused", "endpoint_refused"}
    log = (await stack.client.get(f"/sharing/agencies/{agency['agency_id']}/deliveries", headers=stack.staff())).json()
    assert {i.get("last_error") or i.get("error") for i in log["items"]} <= {"refused", "endpoint_refused", None}
    assert address not in str(log)


async def test_a_redirect_is_not_followed(stack: Stack) -> None:
    inside = Receiver()

    async def redirecting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if b'"type":"endpoint.verification"' in body:  # the endpoint proves it is the agency's
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 307,
                    "headers": [(b"location", f"http://{PRIVATE}:{inside_port}/steal".encode())]})
        await send({"type": "http.response.body", "body": b""})

    async with serving(inside, PRIVATE) as inside_port, serving(redirecting, PUBLIC) as port:
        (pupil,) = await stack.consent.enrol()
        await stack.grant(pupil)
        agency = await stack.agency(f"http://{PUBLIC}:{port}/hooks")
        delivery_id = (await stack.share(agency["agency_id"], pupil)).json()["delivery_id"]
        row = await eventually(lambda: _finished(stack, delivery_id), timeout=60)
    assert row.status == "failed" and inside.received == []
    assert {(t.status_code, t.error) for t in await stack.attempts(delivery_id)} == {(307, "http_307")}


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_keeps_the_host_name_for_sni_and_certificate_checks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pinned transport connects to the vetted IP, yet TLS is made with the URL's name: a
    certificate for that name verifies, the same server under another name does not."""
    receiver = Receiver()
    cert, key = _certificate(tmp_path, "agency.test")
    async with serving(receiver, PUBLIC, ssl_certfile=str(cert), ssl_keyfile=str(key)) as port:
        resolver(monkeypatch, {"agency.test": [PUBLIC], "other.test": [PUBLIC]})
        trusted = ssl.create_default_context(cafile=str(cert))
        transport = pinned_transport(networks([f"{PUBLIC}/32"]), verify=trusted)
        async with httpx.AsyncClient(transport=transport, follow_redirects=False) as client:
            response = await client.post(f"https://agency.test:{port}/hooks", content=b"{}")
            assert response.status_code == 204
            with pytest.raises(httpx.ConnectError, match=r"certificate|hostname"):
                await client.post(f"https://other.test:{port}/hooks", content=b"{}")
        assert [r["headers"]["host"] for r in receiver.received] == [f"agency.test:{port}"]
        # Without the allow-list the same connection is refused before a byte is sent.
        async with httpx.AsyncClient(transport=pinned_transport([], verify=trusted)) as client:
            with pytest.raises(endpoints.Refused, match=r"^refused$"):
                await client.post(f"https://agency.test:{port}/hooks", content=b"{}")
        assert len(receiver.received) == 1
    assert ipaddress.ip_address(PUBLIC).is_loopback
