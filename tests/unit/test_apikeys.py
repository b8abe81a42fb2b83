from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ml_common.apikeys import ApiKeyStore
from ml_common.errors import InvalidCallbackUrl, NotAllowed
from ml_common.settings import get_settings
from ml_tools import cli


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


def test_a_key_keeps_its_default_callback_url(tmp_path: Path) -> None:
    store = ApiKeyStore(tmp_path / "keys.json")
    plain, made = store.create("hooked", callback_url="https://hooks.example/mlprod")
    key = ApiKeyStore(tmp_path / "keys.json").check(plain)  # read back from the file
    assert key is not None and key.callback_url == made.callback_url
    assert key.callback_url == "https://hooks.example/mlprod"
    web, _ = store.create("web", delegates=True, callback_url="http://hooks.example/web")
    delegating = store.check(web)
    assert delegating is not None
    assert delegating.on_behalf_of("alice").callback_url == "http://hooks.example/web"
    plain_key, _ = store.create("bare")
    bare = store.check(plain_key)
    assert bare is not None and bare.callback_url == ""


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example/x", "https://user:pw@hooks.example/x", "https://h/" + "a" * 2050]
)
def test_a_bad_default_callback_url_stores_no_key(tmp_path: Path, url: str) -> None:
    store = ApiKeyStore(tmp_path / "keys.json")
    with pytest.raises(InvalidCallbackUrl):
        store.create("hooked", callback_url=url)
    assert store.list() == []


def test_the_cli_creates_a_key_with_a_callback_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ML_API_KEYS_FILE", str(tmp_path / "keys.json"))
    get_settings.cache_clear()  # read afresh, with this key file
    assert cli.main(["api-key", "create", "hooked", "--callback-url", "https://h.example/x"]) == 0
    plain = capsys.readouterr().out.strip()
    key = ApiKeyStore(tmp_path / "keys.json").check(plain)
    assert key is not None and key.callback_url == "https://h.example/x"
    assert cli.main(["api-key", "create", "bad", "--callback-url", "file:///etc/passwd"]) == 2
    assert [k.name for k in ApiKeyStore(tmp_path / "keys.json").list()] == ["hooked"]
    get_settings.cache_clear()  # the next test reads its own
