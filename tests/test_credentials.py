"""secrets: Fernet encryption at rest with a 0600 key file made on first use."""

from __future__ import annotations

import stat
import threading

import pytest

from provisioner import credentials


def test_round_trip_and_key_file_made_once_0600(tmp_path):
    assert not credentials.key_path(tmp_path).exists()
    first = credentials.encrypt(tmp_path, "pa55 word")
    key = credentials.key_path(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    second = credentials.encrypt(tmp_path, "pa55 word")
    assert first != second  # a fresh IV each time: equal passwords do not look equal at rest
    assert credentials.is_encrypted(first) and "pa55" not in first
    assert credentials.decrypt(tmp_path, first) == credentials.decrypt(tmp_path, second) == "pa55 word"
    assert list(tmp_path.iterdir()) == [key]  # no temporary file left behind


def test_concurrent_first_use_agrees_on_one_key(tmp_path):
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(credentials.encrypt(tmp_path, "x"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [credentials.decrypt(tmp_path, t) for t in tokens] == ["x"] * 8


def test_missing_or_other_key_cannot_decrypt(tmp_path):
    token = credentials.encrypt(tmp_path / "a", "hunter2")
    with pytest.raises(credentials.SecretError, match="key file .* is missing"):
        credentials.decrypt(tmp_path / "b", token)
    assert not credentials.key_path(tmp_path / "b").exists()  # decrypting never makes a key
    credentials.encrypt(tmp_path / "c", "other")
    with pytest.raises(credentials.SecretError, match="does not decrypt"):
        credentials.decrypt(tmp_path / "c", token)
    with pytest.raises(credentials.SecretError, match="not an encrypted secret"):
        credentials.decrypt(tmp_path / "a", "hunter2")
    with pytest.raises(credentials.SecretError, match="does not decrypt"):
        credentials.decrypt(tmp_path / "a", token[:-4])


def test_group_readable_key_is_reported(tmp_path, caplog):
    token = credentials.encrypt(tmp_path, "x")
    credentials.key_path(tmp_path).chmod(0o644)
    with caplog.at_level("WARNING"):
        assert credentials.decrypt(tmp_path, token) == "x"
    assert "chmod 600" in caplog.text
