"""The audit ledger's metrics, beside the kernel's consumer metrics (retries, dead letters, lag):
what was recorded, what could not be, whether the ledger still verifies, and how long entries
have waited for a signature. The ops dashboards and alerts (deploy/k8s/monitoring) read them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from opentelemetry import metrics

meter = metrics.get_meter("flourish.audit")

entries_appended = meter.create_counter(
    "flourish_audit_entries_appended", unit="{entry}", description="Entries appended to the audit ledger, by kind"
)
record_failures = meter.create_counter(
    "flourish_audit_record_failures",
    unit="{attempt}",
    description="Attempts to record an event in the ledger that failed (the consumer retries, then dead-letters)",
)
checkpoints_signed = meter.create_counter(
    "flourish_audit_checkpoints_signed", unit="{checkpoint}", description="Checkpoints signed"
)
verification_failures = meter.create_counter(
    "flourish_audit_verification_failures",
    unit="{verification}",
    description="Verifications of the ledger that failed: before signing a checkpoint, or the periodic full check",
)

witness_failures = meter.create_counter(
    "flourish_audit_witness_failures",
    unit="{attempt}",
    description="Attempts to read or write the checkpoint witness that failed (the checkpointer retries)",
)
checkpoints_refused = meter.create_counter(
    "flourish_audit_checkpoints_refused",
    unit="{chain}",
    description="Chains the checkpointer refused to sign because they do not extend the last witnessed "
    "checkpoint, by reason (truncated, rewritten, broken)",
)

_state = {"unsigned_entries": 0.0, "checkpoint_age_s": 0.0, "unwitnessed_checkpoints": 0.0}


def record_signing_backlog(unsigned_entries: int, checkpoint_age_s: float) -> None:
    _state["unsigned_entries"] = float(unsigned_entries)
    _state["checkpoint_age_s"] = checkpoint_age_s


def record_unwitnessed(checkpoints: int) -> None:
    _state["unwitnessed_checkpoints"] = float(checkpoints)


def _observe(key: str) -> Any:
    def observe(_: Any) -> Iterator[metrics.Observation]:
        yield metrics.Observation(_state[key])

    return observe


unsigned_entries = meter.create_observable_gauge(
    "flourish_audit_unsigned_entries", callbacks=[_observe("unsigned_entries")], unit="{entry}",
    description="Entries not yet covered by a signed checkpoint, over every chain",
)
checkpoint_age = meter.create_observable_gauge(
    "flourish_audit_checkpoint_age", callbacks=[_observe("checkpoint_age_s")], unit="s",
    description="Seconds since the newest signed checkpoint of the chain that has waited longest with "
    "entries not yet signed (0 when every entry is signed)",
)


unwitnessed_checkpoints = meter.create_observable_gauge(
    "flourish_audit_unwitnessed_checkpoints", callbacks=[_observe("unwitnessed_checkpoints")], unit="{checkpoint}",
    description="Signed checkpoints the witness does not hold yet (queued while it is unreachable)",
)


def export_verification_failures() -> None:
    """Export the failure counters at zero from the start (call once the service's meter provider
    is installed), so that the first failure is an increase Prometheus can see."""
    for check in ("before_checkpoint", "periodic"):
        verification_failures.add(0, {"check": check})
    for reason in ("truncated", "rewritten", "broken"):
        checkpoints_refused.add(0, {"reason": reason})
    for operation in ("read", "write"):
        witness_failures.add(0, {"operation": operation})
