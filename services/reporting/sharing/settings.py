"""Sharing's settings (environment variables FLOURISH_SHARING_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SharingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOURISH_SHARING_", extra="ignore")

    # Private, loopback and link-local endpoint addresses are refused unless listed here (IP
    # addresses or CIDR networks): a webhook must not become a way into the trust's own network.
    allowed_private_networks: list[str] = Field(default_factory=list)

    # The Standard Webhooks retry schedule, in every environment: the first try at once, then
    # each failed try waits the next step (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h),
    # plus up to `jitter` x that at random (never less than the schedule). One try per step: the
    # delivery is dead-lettered after the last. Only tests shorten it.
    retry_schedule_s: list[float] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0], min_length=1)
    jitter: float = Field(default=0.1, ge=0, le=1)
    # An endpoint that has failed every try for this long (five days) is disabled, with an alert
    # (flourish_webhook_endpoints_disabled_total); `410 Gone` disables it at once.
    disable_after_failing_s: float = Field(default=5 * 86400, gt=0)

    # Tries before a delivery is dead-lettered: by default one per step of the schedule (a number
    # past its end repeats the last step). Only tests lower it.
    max_attempts: int | None = Field(default=None, ge=1)

    @property
    def tries(self) -> int:
        return self.max_attempts or len(self.retry_schedule_s)

    def delay_after(self, tries: int) -> float:
        """The schedule's wait after the `tries`-th failed try (before jitter)."""
        return self.retry_schedule_s[min(tries, len(self.retry_schedule_s) - 1)]

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
