"""Each domain error of the reporting service as the problem+json the client gets, in one place
(the kernel's own, shared.errors_to_problems, apply too)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from services.reporting.audit.checkpoints import ChainBroken
from services.reporting.audit.proofs import ProofUnavailable
from services.reporting.audit.signing import SigningKeyUnavailable
from services.reporting.audit.witness import WitnessUnavailable
from shared.problems import Conflict, NotFound, Problem, ServiceUnavailable

PROBLEMS: Mapping[type[Exception], Callable[[Exception], Problem]] = {
    ChainBroken: lambda e: Conflict(f"the audit chain does not verify, so no proof can be signed: {e}"),
    ProofUnavailable: lambda e: NotFound(str(e)),
    SigningKeyUnavailable: lambda e: ServiceUnavailable("the checkpoint signing key is unavailable"),
    # No proof is given without its witness: the client may try again once the witness answers.
    WitnessUnavailable: lambda e: ServiceUnavailable("the audit witness is unreachable, so no proof can be checked"),
}
