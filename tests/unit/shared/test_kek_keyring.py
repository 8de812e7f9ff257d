"""The versioned key-encryption keyring: the active KEK wraps, every KEK held unwraps what was
wrapped under it (by kek_id), and nothing else opens."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.datakeys import DataKeyError, DataKeySettings, KekKeyring, LocalKek, UnknownKek, key_aad

OLD, NEW = LocalKek(bytes(range(32))), LocalKek(bytes(range(1, 33)))
AAD = key_aad(uuid.uuid4(), uuid.uuid4())


def b64(kek_bytes: bytes) -> SecretStr:
    return SecretStr(base64.b64encode(kek_bytes).decode())


async def test_the_active_kek_wraps_and_each_secret_unwraps_under_the_kek_it_names() -> None:
    before = await KekKeyring(OLD).wrap(b"s" * 32, AAD)
    assert before.kek_id == OLD.key_id
    keyring = KekKeyring(NEW, [OLD])
    after = await keyring.wrap(b"t" * 32, AAD)
    assert after.kek_id == NEW.key_id == keyring.active_id
    assert await keyring.unwrap(before.kek_id, before.blob, AAD) == b"s" * 32
    assert await keyring.unwrap(after.kek_id, after.blob, AAD) == b"t" * 32
    moved = await keyring.rewrap(before.kek_id, before.blob, AAD)
    assert moved.kek_id == NEW.key_id and await KekKeyring(NEW).unwrap(moved.kek_id, moved.blob, AAD) == b"s" * 32


async def test_a_tampered_or_unknown_kek_id_is_refused() -> None:
    keyring = KekKeyring(NEW, [OLD])
    old = await KekKeyring(OLD).wrap(b"s" * 32, AAD)
    with pytest.raises(UnknownKek):
        await keyring.unwrap("local:0000000000000000", old.blob, AAD)
    with pytest.raises(UnknownKek):
        await keyring.unwrap(None, old.blob, AAD)
    with pytest.raises(DataKeyError):  # names another KEK the keyring holds: AES-GCM refuses it
        await keyring.unwrap(NEW.key_id, old.blob, AAD)
    with pytest.raises(UnknownKek):  # the old KEK removed: what it wrapped no longer opens
        await KekKeyring(NEW).unwrap(old.kek_id, old.blob, AAD)


def test_settings_the_single_kek_keeps_its_id_and_retired_keks_join_for_unwrap(tmp_path: Path) -> None:
    single = KekKeyring.from_settings(DataKeySettings(data_kek=b64(bytes(range(32)))), tmp_path)
    assert single.active_id == OLD.key_id and single.ids == {OLD.key_id}
    rotated = KekKeyring.from_settings(DataKeySettings(data_kek=b64(bytes(range(1, 33))),
                                                       data_kek_retired=[b64(bytes(range(32)))]), tmp_path)
    assert rotated.active_id == NEW.key_id and rotated.ids == {OLD.key_id, NEW.key_id}


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLOURISH_DATA_KEK", b64(bytes(range(1, 33))).get_secret_value())
    monkeypatch.setenv("FLOURISH_DATA_KEK_RETIRED", f'["{b64(bytes(range(32))).get_secret_value()}"]')
    assert KekKeyring.from_settings(DataKeySettings(), tmp_path).ids == {OLD.key_id, NEW.key_id}


def test_the_dev_keyring_reads_retired_keks_from_the_state_folder(tmp_path: Path) -> None:
    active = KekKeyring.from_settings(DataKeySettings(), tmp_path)
    retired = tmp_path / "data-kek" / "retired"
    retired.mkdir(parents=True)
    (retired / "old.b64").write_text(b64(bytes(range(32))).get_secret_value() + "\n")
    again = KekKeyring.from_settings(DataKeySettings(), tmp_path)
    assert again.active_id == active.active_id and again.ids == {active.active_id, OLD.key_id}
