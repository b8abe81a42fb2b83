from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ml_common.apikeys import ApiKeyStore


def test_create_check_revoke(tmp_path: Path) -> None:
    store = ApiKeyStore(tmp_path / "keys.json")
    plain, key = store.create("client")
    assert plain.startswith("mlp_") and len(plain) > 40
    assert plain not in (tmp_path / "keys.json").read_text()
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    checked = store.check(plain)
    assert checked is not None and checked.name == "client" and checked.key_id == key.key_id
    assert store.check(plain + "x") is None
    other = ApiKeyStore(tmp_path / "keys.json")  # another process sees the same file
    assert other.revoke("client")
    assert store.check(plain) is None
    assert not other.revoke("client")


def test_names_are_unique_and_plain(tmp_path: Path) -> None:
    store = ApiKeyStore(tmp_path / "keys.json")
    store.create("a")
    with pytest.raises(ValueError, match="exists"):
        store.create("a")
    with pytest.raises(ValueError, match="letters"):
        store.create("a b/c")
    assert [k.name for k in store.list()] == ["a"]
