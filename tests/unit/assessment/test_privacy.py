"""The UPN blind index: keyed, per trust, normalised; and its key's settings."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid

import pytest
from pydantic import SecretStr

from services.assessment.privacy import AssessmentPrivacySettings, BlindIndex


def test_the_index_is_keyed_per_trust_and_normalises_the_upn(tmp_path):
    index = BlindIndex(os.urandom(32))
    trust = uuid.uuid4()
    assert index.upn(trust, "a12345678901b") == index.upn(trust, " A12345678901B ")
    assert index.upn(trust, "A12345678901B") != index.upn(uuid.uuid4(), "A12345678901B")
    assert index.upn(trust, "A12345678901B") != hashlib.sha256(b"A12345678901B").hexdigest()
    assert BlindIndex(os.urandom(32)).upn(trust, "A12345678901B") != index.upn(trust, "A12345678901B")


def test_the_key_comes_from_the_setting_or_a_dev_key_under_state_dir_never_in_production(tmp_path):
    material = os.urandom(32)
    configured = AssessmentPrivacySettings(lookup_key=SecretStr(base64.b64encode(material).decode()))
    trust = uuid.uuid4()
    from_settings = BlindIndex.from_settings(configured, tmp_path, production=True)
    assert from_settings.upn(trust, "A1") == BlindIndex(material).upn(trust, "A1")

    unset = AssessmentPrivacySettings(lookup_key=None)
    first = BlindIndex.from_settings(unset, tmp_path, production=False)
    assert first.upn(trust, "A1") == BlindIndex.from_settings(unset, tmp_path, production=False).upn(trust, "A1")
    assert (tmp_path / "lookup-key" / "lookup.b64").stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match="FLOURISH_LOOKUP_KEY"):
        BlindIndex.from_settings(unset, tmp_path, production=True)
    with pytest.raises(ValueError, match="FLOURISH_LOOKUP_KEY is not valid base64"):
        BlindIndex.from_settings(AssessmentPrivacySettings(lookup_key=SecretStr("not base64!")), tmp_path, production=False)
