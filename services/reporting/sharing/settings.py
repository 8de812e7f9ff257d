"""Sharing's settings (environment variables FLOURISH_SHARING_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SharingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOURISH_SHARING_", extra="ignore")

    # Private, loopback and link-local endpoint addresses are refused unless listed here (IP
    # addresses or CIDR networks): a webhook must not become a way into the trust's own network.
    allowed_private_networks: list[str] = Field(default_factory=list)

    # Tries per delivery, and the wait before try n+1: base × factor^(n-1), at most backoff_max_s,
    # plus up to `jitter` × that at random (never less than the schedule).
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    backoff_max_s: float = Field(default=3600.0, gt=0)
    jitter: float = Field(default=0.1, ge=0, le=1)

    # The delivery worker: how many due deliveries one pass takes, how often it looks when idle,
    # how long an agency's endpoint may take to answer.
    batch_size: int = Field(default=100, ge=1, le=1000)
    poll_interval_s: float = Field(default=0.5, gt=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    consent_timeout_s: float = Field(default=5.0, gt=0)

    # Agencies' lifecycle: how long the previous signing secret still signs beside the new one
    # after a rotation (Standard Webhooks: both signatures in `webhook-signature`), and how long
    # the endpoint may take to answer its `endpoint.verification` event.
    rotation_overlap_s: float = Field(default=24 * 3600.0, ge=0)
    verification_timeout_s: float = Field(default=10.0, gt=0)
