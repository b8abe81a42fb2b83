from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ml_common.apikeys import ApiKeyStore
from ml_common.errors import NotAllowed


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


def test_a_delegating_key_acts_as_each_of_its_users_apart(tmp_path: Path) -> None:
    store = ApiKeyStore(tmp_path / "keys.json")
    plain, _ = store.create("web", delegates=True)
    key = store.check(plain)
    assert key is not None and key.delegates
    alice, bob = key.on_behalf_of("alice"), key.on_behalf_of("bob")
    assert len({key.key_id, alice.key_id, bob.key_id}) == 3  # three owners, three rate limits
    assert alice.key_id.startswith(key.key_id + ".") and not alice.delegates
    assert key.on_behalf_of("alice") == alice  # the same user is the same owner every time
    with pytest.raises(NotAllowed):
        alice.on_behalf_of("bob")  # a user cannot pass as another
    with pytest.raises(NotAllowed):
        key.on_behalf_of("")


def test_an_ordinary_key_may_not_act_for_others(tmp_path: Path) -> None:
    store = ApiKeyStore(tmp_path / "keys.json")
    plain, _ = store.create("alice")
    key = store.check(plain)
    assert key is not None and not key.delegates
    with pytest.raises(NotAllowed, match="--delegate"):
        key.on_behalf_of("bob")
