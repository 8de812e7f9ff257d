"""Verifying a chain and its signed checkpoints, in memory: untouched chains pass, and every kind
of tampering is found at the entry it touched."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.reporting.audit.domain.canonical import entry_body, sha256_hex
from services.reporting.audit.domain.chain import ChainHead, ChainVerifier, key_id_of, signature_is_valid
from services.reporting.audit.signing import CheckpointSigner
from shared.auth import public_jwk
from tests.unit.audit.chains import build_chain


def verify(chain, rows=None, head=None, keys=None, batch=5):  # type: ignore[no-untyped-def]
    rows = chain.rows if rows is None else rows
    verifier = ChainVerifier(chain.trust_id, keys if keys is not None else chain.keys)
    verifier.expect_checkpoints(chain.checkpoints)
    for start in range(0, len(rows), batch):
        if not verifier.feed(rows[start:start + batch]):
            break
    return verifier.finish(head)


def with_body(row, **changes):  # type: ignore[no-untyped-def]
    seq, prev, entry_hash, body = row
    document = json.loads(body)
    document["fact"].update(changes)
    return (seq, prev, entry_hash, json.dumps(document, sort_keys=True, separators=(",", ":")))


def test_an_untouched_chain_verifies_with_every_checkpoint():
    chain = build_chain(10, checkpoint_every=4)
    report = verify(chain, head=ChainHead(10, chain.rows[-1][2]))
    assert report.ok and report.entries == 10 and report.checkpoints == 2
    assert report.last_checkpoint.seq == 8 and report.unsigned_entries == 2


def test_a_changed_field_is_named_at_its_entry():
    chain = build_chain(10)
    rows = list(chain.rows)
    rows[5] = with_body(rows[5], agency_category="social_care")
    report = verify(chain, rows)
    assert report.mismatch.seq == 6 and "does not match its hash" in report.mismatch.reason
    assert report.mismatch.event_id == json.loads(rows[5][3])["fact"]["event_id"]


def test_a_deleted_entry_is_named_by_the_entry_after_the_gap():
    chain = build_chain(10)
    rows = chain.rows[:3] + chain.rows[4:]
    report = verify(chain, rows)
    assert report.mismatch.seq == 5 and "entries 4..4 are missing" in report.mismatch.reason


def _with_forgery_at_4(chain):  # type: ignore[no-untyped-def]
    forged_body = entry_body(chain.trust_id, 4, chain.rows[2][2], {"kind": "disclosure", "action": "share"})
    forged = (4, chain.rows[2][2], sha256_hex(forged_body), forged_body)
    # Everything after the forgery moves one place down, as an attacker must renumber to insert.
    shifted = [(seq + 1, prev, entry_hash, body) for seq, prev, entry_hash, body in chain.rows[3:]]
    return [*chain.rows[:3], forged, *shifted]


def test_an_inserted_entry_with_a_recomputed_hash_is_named_where_the_chain_breaks():
    chain = build_chain(10, checkpoint_every=20)
    report = verify(chain, _with_forgery_at_4(chain))
    assert report.mismatch.seq == 5 and "prev_hash" in report.mismatch.reason


def test_an_inserted_entry_where_a_checkpoint_was_signed_is_named_itself():
    chain = build_chain(10, checkpoint_every=4)
    report = verify(chain, _with_forgery_at_4(chain))
    assert report.mismatch.seq == 4 and "rewritten" in report.mismatch.reason


def test_two_reordered_entries_are_named_at_the_first_of_them():
    chain = build_chain(10)
    rows = list(chain.rows)
    a, b = rows[2], rows[6]
    rows[2], rows[6] = (a[0], *b[1:]), (b[0], *a[1:])
    report = verify(chain, rows)
    assert report.mismatch.seq == 3


def test_a_rewritten_and_rehashed_chain_is_caught_by_the_signed_checkpoint():
    chain = build_chain(8, checkpoint_every=8)
    # An attacker with the database but not the key: change entry 3, recompute every hash after it.
    rows, prev = list(chain.rows[:2]), chain.rows[1][2]
    for seq, _, _, body in chain.rows[2:]:
        document = json.loads(body)
        if seq == 3:
            document["fact"]["agency_category"] = "other"
        new_body = entry_body(chain.trust_id, seq, prev, document["fact"])
        rows.append((seq, prev, sha256_hex(new_body), new_body))
        prev = rows[-1][2]
    report = verify(chain, rows)
    assert report.mismatch.seq == 8 and "rewritten" in report.mismatch.reason


def test_a_truncated_tail_is_caught_by_the_chain_head_and_an_appended_entry_too():
    chain = build_chain(10, checkpoint_every=20)
    truncated = verify(chain, chain.rows[:9], head=ChainHead(10, chain.rows[-1][2]))
    assert truncated.mismatch.seq == 10 and "missing" in truncated.mismatch.reason
    appended = verify(chain, chain.rows, head=ChainHead(9, chain.rows[8][2]))
    assert appended.mismatch.seq == 10 and "added afterwards" in appended.mismatch.reason


def test_a_checkpoint_past_the_end_means_entries_were_removed():
    chain = build_chain(8, checkpoint_every=8)
    report = verify(chain, chain.rows[:6])
    assert report.mismatch.seq == 7


def test_a_checkpoint_signed_with_another_key_or_forged_fails():
    chain = build_chain(8, checkpoint_every=4)
    stranger = CheckpointSigner(Ed25519PrivateKey.generate())
    report = verify(chain, keys={stranger.key_id: stranger.public_key})
    assert report.mismatch.seq == 4 and "not among the public keys" in report.mismatch.reason

    forged = stranger.sign(chain.trust_id, 4, chain.rows[3][2], chain.checkpoints[0].signed_at)
    assert not signature_is_valid(forged, chain.signer.public_key)


def test_a_key_id_is_the_jwk_thumbprint_the_auth_module_uses():
    private = Ed25519PrivateKey.generate()
    assert key_id_of(private.public_key()) == public_jwk(private)["kid"]


def test_verifying_can_start_at_a_checkpoint():
    chain = build_chain(12, checkpoint_every=4)
    cp = chain.checkpoints[1]
    verifier = ChainVerifier(chain.trust_id, chain.keys, start=ChainHead(cp.seq, cp.entry_hash))
    verifier.feed(chain.rows[cp.seq:])
    assert verifier.finish().ok and verifier.report.entries == 4
