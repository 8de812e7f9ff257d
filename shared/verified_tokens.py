"""Bearer tokens already verified: one cache per running service, behind every `requires(...)`.

An Ed25519 signature check costs more than the rest of a small request's authentication; a
client sends the same token for the token's whole life. So each running service keeps the
tokens it verified (`Runtime.verified_tokens`, over its own verifier: a token one service, or
one app in a test process, accepted is never taken on trust by another):

- bounded: at most `token_cache_size` tokens (Settings), least recently used dropped first;
- never past a token's `exp` (nor `max_age_s` after it was verified);
- flushed when the signing keys change (the verifier re-read the JWKS and the set differs), and
  an entry is used only while its key is still current: the JWKS needs no re-reading (the dev
  issuer's file is unchanged; the provider's keys are younger than their maximum age). Otherwise
  the token is verified afresh, against the keys as they are now.

A hit costs no thread-pool hop and no I/O; a miss is verified in a worker thread (fetching the
provider's keys may block).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials

from shared.auth import Principal, Role, TokenVerifier
from shared.problems import Unauthenticated


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    kid: str
    until: float  # wall-clock seconds: the token's exp, or sooner
    generation: int


class VerifiedTokens:
    """Tokens this service verified, each remembered until the first of: its `exp`, `max_age_s`
    after verification, a change of the signing keys, eviction (LRU, `max_entries`)."""

    def __init__(self, verifier: TokenVerifier, max_entries: int = 4096, max_age_s: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._verifier = verifier
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_entries = max_entries
        self._max_age_s = max_age_s
        self._clock = clock
        self._generation = verifier.keys_generation
        # Misses are verified in worker threads while hits are looked up on the event loop.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified before and still good; None: verify it (`verify`)."""
        generation = self._verifier.keys_generation
        with self._lock:
            if generation != self._generation:  # the keys changed: nothing verified before stands
                self._entries.clear()
                self._generation = generation
                return None
            entry = self._entries.get(token)
            if entry is None:
                return None
            if entry.until <= self._clock() or entry.generation != generation \
                    or not self._verifier.key_current(entry.kid):
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry.principal

    def verify(self, token: str) -> Principal:
        """Verify (raises 401 if not valid; may fetch the keys: call it off the event loop) and remember."""
        principal = self._verifier.verify(token)
        # After: verify re-reads the keys when needed before it checks. A hit checks again that
        # the token's key is still a signing key (`key_current`), so a race here cannot outlive it.
        generation = self._verifier.keys_generation
        claims = jwt.decode(token, options={"verify_signature": False})
        kid = jwt.get_unverified_header(token).get("kid")
        until = min(float(claims["exp"]), self._clock() + self._max_age_s)
        if until > self._clock() and isinstance(kid, str):
            with self._lock:
                self._remember(token, _Entry(principal, kid, until, generation))
        return principal

    def _remember(self, token: str, entry: _Entry) -> None:
        if entry.generation != self._generation:
            self._entries.clear()
            self._generation = entry.generation
        self._entries[token] = entry
        self._entries.move_to_end(token)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def principal(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        """Synchronous: the cached principal, or the token verified now."""
        if credentials is None:
            raise Unauthenticated.missing_token()
        return self.cached(credentials.credentials) or self.verify(credentials.credentials)

    async def principal_async(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        """For a dependency: a hit on the event loop, a miss verified in a worker thread."""
        if credentials is None:
            raise Unauthenticated.missing_token()
        found = self.cached(credentials.credentials)
        if found is not None:
            return found
        return await run_in_threadpool(self.verify, credentials.credentials)


def requires_cached(*roles: Role) -> Callable[..., object]:
    """`shared.api.requires`: every route's verification is cached now (kept for its callers)."""
    from shared.api import requires

    return requires(*roles)
