"""Domain errors, named after the rule they protect; api.py maps each to one problem+json."""

from __future__ import annotations


class ConsentError(Exception):
    """A consent, retention or erasure command broke a domain rule."""


class DecisionInFuture(ConsentError):
    """A decision cannot be recorded before it was made."""


class DecisionOutOfOrder(ConsentError):
    """A decision older than the record's latest one would silently rewrite history."""


class InvalidValidity(ConsentError):
    """`valid_until` must come after the decision it bounds."""


class NothingToWithdraw(ConsentError):
    """Only consent that was granted (and not yet withdrawn) can be withdrawn."""


class NotASharingPurpose(ConsentError):
    """Lawful bases and sharing decisions concern agency categories only."""


class InvalidRetentionPeriod(ConsentError):
    """A retention period must be positive (and of a sane length)."""


class UnknownPupil(ConsentError):
    """The consent service has never heard of this pupil (no PupilEnrolled)."""


class PupilAlreadyErased(ConsentError):
    """The pupil was erased: nothing more can be recorded or read about them."""


class NoOptOut(ConsentError):
    """A reason to keep an opted-out child's data needs an opt-out of online processing in force."""


class OptOutGracePassed(ConsentError):
    """The grace period after the opt-out has ended: what was held is (being) erased."""


class OptOutAlreadyKept(ConsentError):
    """A DPO already recorded a reason to keep the data held for this opt-out."""
