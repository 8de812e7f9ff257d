"""The exact bytes an audit entry's hash covers: its canonical JSON.

An entry is the JSON object {"chain": {...}, "fact": {...}} serialised with keys sorted, no
whitespace, UTF-8 and no escaping beyond JSON's own: for the values the ledger allows (strings
without control characters, integers, null, nested objects and arrays of strings) this is RFC 8785
(JCS), so `json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` in any
Python gives the same text. Because "chain" sorts before "fact", every entry starts with its
position in the chain — which is what lets the verifier check the link without parsing the JSON.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

HASH_HEX_LENGTH = 64
# The "previous hash" of a chain's first entry.
GENESIS_HASH = "0" * HASH_HEX_LENGTH


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 (see the module docstring for why this is JCS here)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def instant(moment: datetime) -> str:
    """A timestamp as the ledger writes it: UTC, microseconds, always the same width, so that
    text order is time order (2026-11-26T09:30:00.000000Z)."""
    if moment.tzinfo is None:
        raise ValueError("the ledger records only timezone-aware times")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_prefix(trust_id: UUID | str, seq: int, prev_hash: str) -> str:
    """How every entry's canonical JSON begins: its trust, position and predecessor's hash."""
    return f'{{"chain":{{"prev_hash":"{prev_hash}","seq":{seq},"trust_id":"{trust_id}"}},'


def entry_body(trust_id: UUID | str, seq: int, prev_hash: str, fact: Mapping[str, Any]) -> str:
    """The canonical JSON of the entry at `seq` recording `fact`."""
    body = canonical_json({"chain": {"prev_hash": prev_hash, "seq": seq, "trust_id": str(trust_id)}, "fact": fact})
    assert body.startswith(chain_prefix(trust_id, seq, prev_hash))  # the layout verify relies on
    return body
