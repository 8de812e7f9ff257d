"""An entry's canonical JSON: the exact text its hash covers, the same in any JSON library."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.reporting.audit.domain.canonical import GENESIS_HASH, chain_prefix, entry_body, instant, sha256_hex
from tests.unit.audit.chains import fact


def test_an_entry_is_rfc8785_style_json_that_any_python_reproduces_by_hand():
    trust = uuid.uuid4()
    body = entry_body(trust, 7, GENESIS_HASH, {**fact(7), "details": {"z": "é", "a": ["x", "y"]}})
    parsed = json.loads(body)
    assert body == json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert sha256_hex(body) == hashlib.sha256(body.encode("utf-8")).hexdigest()


def test_every_entry_begins_with_its_trust_position_and_predecessor():
    trust = uuid.uuid4()
    body = entry_body(trust, 12, "ab" * 32, fact(12))
    assert body.startswith(chain_prefix(trust, 12, "ab" * 32))
    assert json.loads(body)["chain"] == {"prev_hash": "ab" * 32, "seq": 12, "trust_id": str(trust)}


def test_times_are_utc_with_microseconds_so_text_order_is_time_order():
    paris = timezone(timedelta(hours=2))
    assert instant(datetime(2026, 9, 1, 11, 0, tzinfo=paris)) == "2026-09-01T09:00:00.000000Z"
    moments = [datetime(2026, 9, 1, tzinfo=UTC) + timedelta(microseconds=n * 999_999) for n in range(50)]
    assert sorted(instant(m) for m in reversed(moments)) == [instant(m) for m in moments]


def test_a_naive_time_is_refused():
    with pytest.raises(ValueError, match="only timezone-aware times"):
        instant(datetime(2026, 9, 1))
