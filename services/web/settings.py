"""The web's settings (FLOURISH_WEB_*), beside the kernel's (service URLs, environment, token checks)."""

from __future__ import annotations

import base64
import secrets

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.localsecrets import dev_secret
from shared.settings import Settings

DEFAULT_PORT = 8105


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOURISH_WEB_", extra="ignore", frozen=True)

    # The trust's OpenID provider: its discovery document (the dev provider's locally).
    oidc_discovery_url: str = "http://127.0.0.1:8106/.well-known/openid-configuration"
    client_id: str = "flourish-web"
    # A confidential client's secret (client_secret_post); a public client (PKCE alone) has none.
    client_secret: str | None = Field(default=None, repr=False)
    scopes: str = "openid profile"
    # Where the browser reaches the web: the redirect URI is <public_url>/auth/callback.
    public_url: str = f"http://127.0.0.1:{DEFAULT_PORT}"
    # The key sealing the session cookie (AES-256-GCM): 32 bytes, base64. Development generates one
    # under state_dir/web/; production must set it (the same on every replica).
    session_key: str | None = Field(default=None, repr=False)
    api_timeout_s: float = Field(default=15.0, gt=0)
    # The trust's Grafana (the operations page links its dashboards there; unset: named, not linked).
    grafana_url: str | None = None

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url.rstrip('/')}/auth/callback"


def session_key(web: WebSettings, kernel: Settings) -> bytes:
    if web.session_key:
        key = base64.b64decode(web.session_key)
    elif kernel.environment == "production":
        raise RuntimeError("FLOURISH_WEB_SESSION_KEY is required in production")
    else:
        key = base64.b64decode(dev_secret(kernel.state_dir / "web" / "session-key",
                                          lambda: base64.b64encode(secrets.token_bytes(32))))
    if len(key) != 32:
        raise RuntimeError("FLOURISH_WEB_SESSION_KEY must be 32 bytes, base64-encoded")
    return key


def production_problems(web: WebSettings, kernel: Settings) -> list[str]:
    """What production needs and lacks (names, never values)."""
    problems = []
    if not web.session_key:
        problems.append("FLOURISH_WEB_SESSION_KEY is not set")
    for name, url in (("FLOURISH_WEB_PUBLIC_URL", web.public_url),
                      ("FLOURISH_WEB_OIDC_DISCOVERY_URL", web.oidc_discovery_url)):
        if not url.startswith("https://"):
            problems.append(f"{name} must be https")
    if not kernel.jwks_url:
        problems.append("FLOURISH_JWKS_URL is not set (the web checks tokens as the services do)")
    return problems


__all__ = ["DEFAULT_PORT", "WebSettings", "production_problems", "session_key"]
