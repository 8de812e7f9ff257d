"""Which webhook endpoints may be registered, and the signatures receivers check."""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.reporting.sharing.endpoints import EndpointRefused, check_endpoint, networks
from services.reporting.sharing.signing import headers, new_secret, secret_text


@pytest.mark.parametrize("url", [
    "http://93.184.216.34/hooks",  # public, but not https outside development
    "https://10.1.2.3/x", "https://172.16.0.1/x", "https://192.168.0.1/x", "https://127.0.0.1/x",
    "https://169.254.169.254/latest/meta-data", "https://[::1]/x", "https://[fe80::1]/x", "https://[::ffff:10.0.0.1]/x",
    "https://0.0.0.0/x", "https://user:pw@93.184.216.34/x", "ftp://93.184.216.34/x", "not a url",
])
async def test_refused_in_production(url: str) -> None:
    with pytest.raises(EndpointRefused):
        await check_endpoint(url, environment="production", allowed=[])


async def test_public_https_is_accepted_and_allow_listed_private_addresses_too() -> None:
    await check_endpoint("https://93.184.216.34/hooks", environment="production", allowed=[])
    await check_endpoint("https://10.1.2.3/x", environment="production", allowed=networks(["10.1.0.0/16"]))
    with pytest.raises(EndpointRefused):
        await check_endpoint("https://10.2.2.3/x", environment="production", allowed=networks(["10.1.0.0/16"]))


async def test_http_only_in_development() -> None:
    await check_endpoint("http://93.184.216.34/hooks", environment="development", allowed=[])


def test_signatures_verify_with_the_standard_webhooks_library_and_only_with_the_right_secret() -> None:
    secret, body = new_secret(), b'{"type":"share.created"}'
    import time

    signed = headers(secret, "msg_1", int(time.time()), body)
    assert Webhook(secret_text(secret)).verify(body, signed) == {"type": "share.created"}
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret_text(new_secret())).verify(body, signed)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret_text(secret)).verify(body + b" ", signed)
