"""A proof for one entry, and an export file, checked with nothing but the public key."""

from __future__ import annotations

import json

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.reporting.audit.domain.chain import Checkpoint
from services.reporting.audit.ledger import StoredEntry
from services.reporting.audit.proofs import bundle, check_proof
from services.reporting.audit.signing import CheckpointSigner
from services.reporting.audit.verification import EXPORT_FORMAT, verify_export
from tests.unit.audit.chains import build_chain


def proof_for(chain, seq):  # type: ignore[no-untyped-def]
    checkpoint = next(c for c in chain.checkpoints if c.seq >= seq)
    stored = [StoredEntry(chain.trust_id, *row) for row in chain.rows]
    return json.loads(json.dumps(bundle(stored[seq - 1], stored[seq:checkpoint.seq], checkpoint, chain.signer.public_key)))


def test_a_proof_holds_for_its_entry_and_fails_if_anything_in_it_changes():
    chain = build_chain(12, checkpoint_every=5)
    proof = proof_for(chain, 7)
    assert [item["seq"] for item in proof["chain"]] == [8, 9, 10] and proof["checkpoint"]["seq"] == 10
    assert check_proof(proof, chain.signer.public_key) is None

    edited = json.loads(json.dumps(proof))
    edited["entry"]["body"] = edited["entry"]["body"].replace("camhs", "other")
    assert "entry 7" in check_proof(edited, chain.signer.public_key)
    short = json.loads(json.dumps(proof))
    short["chain"].pop()
    assert check_proof(short, chain.signer.public_key) is not None
    stranger = Ed25519PrivateKey.generate().public_key()
    assert "not among the public keys" in check_proof(proof, stranger)


def test_the_checkpoint_statement_is_what_a_person_can_verify_with_openssl_or_python():
    chain = build_chain(4, checkpoint_every=4)
    cp = chain.checkpoints[0]
    statement = json.loads(cp.statement)
    assert statement == {"entry_hash": cp.entry_hash, "key_id": cp.key_id, "seq": 4, "signed_at": "2026-09-01T13:00:00.000000Z",
                         "trust_id": str(chain.trust_id), "type": "flourish.audit.Checkpoint.v1"}
    assert Checkpoint.from_json(cp.as_json()) == cp


def export_lines(chain):  # type: ignore[no-untyped-def]
    signed = {c.seq: c for c in chain.checkpoints}
    yield orjson.dumps({"format": EXPORT_FORMAT, "trust_id": str(chain.trust_id), "exported_at": "2026-12-19T00:00:00.000000Z"})
    for row in chain.rows:
        yield orjson.dumps(list(row))
        if row[0] in signed:
            yield orjson.dumps({"checkpoint": signed[row[0]].as_json()})
    yield orjson.dumps({"end": {"entries": len(chain.rows), "head": {"seq": chain.rows[-1][0], "entry_hash": chain.rows[-1][2]}}})


def test_an_export_verifies_offline_and_a_missing_line_is_named():
    chain = build_chain(9, checkpoint_every=3)
    lines = list(export_lines(chain))
    report = verify_export(lines, chain.keys)
    assert report.ok and report.entries == 9 and report.checkpoints == 3
    del lines[3]  # entry 3 (the header is line 0)
    assert verify_export(lines, chain.keys).mismatch.seq == 4


def test_the_cli_checks_a_proof_with_the_key_you_give_it(tmp_path):
    from typer.testing import CliRunner

    from services.reporting.audit.cli import app

    chain = build_chain(12, checkpoint_every=5)
    (tmp_path / "proof.json").write_text(json.dumps(proof_for(chain, 7)))
    (tmp_path / "key.json").write_text(json.dumps(chain.signer.published()))
    (tmp_path / "key.pem").write_text(chain.signer.published()["pem"])
    for key in ("key.json", "key.pem"):
        ok = CliRunner().invoke(app, ["check-proof", str(tmp_path / "proof.json"), "--public-key", str(tmp_path / key)])
        assert ok.exit_code == 0 and "OK: entry 7 is covered by checkpoint 10" in ok.output, ok.output
    stranger = CheckpointSigner(Ed25519PrivateKey.generate())
    (tmp_path / "other.pem").write_text(stranger.published()["pem"])
    refused = CliRunner().invoke(app, ["check-proof", str(tmp_path / "proof.json"), "--public-key", str(tmp_path / "other.pem")])
    assert refused.exit_code == 1 and "FAILED: entry 10" in refused.output
