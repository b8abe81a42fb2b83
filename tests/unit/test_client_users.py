"""Web client users: hashing, parsing, verifying, first-start bootstrap and the CLI."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr

from ml_client import users
from ml_client.settings import ClientSettings
from ml_client.users import UserStore, bootstrap_users, hash_password, parse_users

CHEAP = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


def _settings(tmp_path: Path, **kw: object) -> ClientSettings:
    return ClientSettings(_env_file=None, storage_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_hash_password_is_argon2id_and_salted() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("$argon2id$")
    assert first != second


def test_parse_users_splits_entries_although_hashes_contain_commas() -> None:
    a, b = CHEAP.hash("a-password"), CHEAP.hash("b-password")
    assert "," in a
    assert parse_users(f"alice:{a},bob:{b}") == {"alice": a, "bob": b}
    assert parse_users(f"# users\nalice:{a}\n\nbob:{b}\n") == {"alice": a, "bob": b}
    assert parse_users("") == {}


@pytest.mark.parametrize("text", ["alice", "alice:plaintext", "bad name:$argon2id$x"])
def test_parse_users_refuses_what_is_not_a_hash_entry(text: str) -> None:
    with pytest.raises(ValueError, match="user entry"):
        parse_users(text)


def test_verify_accepts_only_the_right_password_of_a_known_user(tmp_path: Path) -> None:
    entry = f"alice:{CHEAP.hash('s3cret-pass')}"
    store = UserStore(_settings(tmp_path, client_users=SecretStr(entry)))
    assert store.verify("alice", "s3cret-pass")
    assert not store.verify("alice", "wrong")
    assert not store.verify("mallory", "s3cret-pass")
    assert store.fingerprint("alice") is not None
    assert store.fingerprint("mallory") is None


def test_users_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"alice:{CHEAP.hash('one-password')}\n")
    store = UserStore(_settings(tmp_path, client_users_file=path))
    assert store.verify("alice", "one-password")
    path.write_text(f"bob:{CHEAP.hash('two-password')}\n")
    os.utime(path, (1, 1))
    assert store.verify("bob", "two-password")
    assert not store.verify("alice", "one-password")


def test_bootstrap_creates_one_private_user_and_logs_its_password_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ml_client.users"):
        bootstrap_users(settings)
        bootstrap_users(settings)
    path = settings.client_users_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    hashed = parse_users(path.read_text())["admin"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    password = messages[0].split("with password ")[1].split(" ")[0]
    assert len(password) >= 20
    assert password not in path.read_text()
    assert PasswordHasher().verify(hashed, password)
    assert UserStore(settings).verify("admin", password)


def test_bootstrap_does_nothing_when_users_are_configured(tmp_path: Path) -> None:
    settings = _settings(tmp_path, client_users=SecretStr(f"alice:{CHEAP.hash('pw-pw-pw-pw')}"))
    bootstrap_users(settings)
    assert not settings.client_users_path.exists()


def test_cli_hash_reads_stdin_and_writes_a_verifiable_hash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(users, "get_client_settings", lambda: _settings(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert users.main(["hash"]) == 0
    hashed = capsys.readouterr().out.strip()
    assert PasswordHasher().verify(hashed, "a long password")


def test_cli_add_writes_the_users_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    monkeypatch.setattr(users, "get_client_settings", lambda: settings)
    monkeypatch.setattr("sys.stdin", io.StringIO("another password\n"))
    assert users.main(["add", "carol"]) == 0
    assert UserStore(settings).verify("carol", "another password")
    assert stat.S_IMODE(settings.client_users_path.stat().st_mode) == 0o600
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert users.main(["add", "dave"]) == 2


@dataclass
class MemoryDocument:
    """A document in memory with a bucket's recheck interval (pure logic: no store)."""

    data: bytes | None = None
    recheck_s: float = 5.0
    versions_asked: int = 0

    def version(self) -> str | None:
        self.versions_asked += 1
        return None if self.data is None else hashlib.sha256(self.data).hexdigest()

    def read(self) -> bytes:
        assert self.data is not None
        return self.data

    def write(self, data: bytes) -> None:
        self.data = data

    def create(self, data: bytes) -> bool:
        if self.data is not None:
            return False
        self.data = data
        return True

    @property
    def location(self) -> str:
        return "memory"


def test_a_shared_document_is_trusted_a_while_but_an_unknown_name_is_looked_up(
    tmp_path: Path,
) -> None:
    document = MemoryDocument(f"alice:{CHEAP.hash('one-password')}\n".encode())
    store = UserStore(_settings(tmp_path), document)
    assert store.verify("alice", "one-password")
    asked = document.versions_asked
    assert store.fingerprint("alice") is not None
    assert document.versions_asked == asked  # within recheck_s: the copy is trusted
    document.write(document.read() + f"bob:{CHEAP.hash('two-password')}\n".encode())
    assert store.verify("bob", "two-password")  # added on another host: seen at once
    assert not store.verify("carol", "two-password")


def test_bootstrap_writes_the_shared_document_once_and_stays_quiet_when_it_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    document = MemoryDocument()
    monkeypatch.setattr(users, "users_document", lambda settings: document)
    with caplog.at_level(logging.WARNING, logger="ml_client.users"):
        bootstrap_users(_settings(tmp_path))
        first = document.data
        bootstrap_users(_settings(tmp_path))
    assert first is not None and document.data == first
    assert list(parse_users(first.decode())) == ["admin"]
    assert len(caplog.records) == 1 and "(in memory)" in caplog.records[0].getMessage()
    lost = MemoryDocument()
    monkeypatch.setattr(lost, "version", lambda: None)  # looked absent, then another host won
    lost.data = b"admin:$argon2id$other\n"
    monkeypatch.setattr(users, "users_document", lambda settings: lost)
    caplog.clear()
    bootstrap_users(_settings(tmp_path))
    assert lost.data == b"admin:$argon2id$other\n" and not caplog.records


def test_users_live_in_the_bucket_unless_a_users_file_is_set(tmp_path: Path) -> None:
    bucket = {"storage_url": "s3://mlprod/p", "s3_endpoint_url": "http://127.0.0.1:9"}
    in_bucket = users.users_document(_settings(tmp_path, **bucket))
    assert in_bucket.location == "s3://mlprod/p/config/web-users"
    chosen = users.users_document(_settings(tmp_path, client_users_file=tmp_path / "u", **bucket))
    assert chosen.location == str(tmp_path / "u")
    assert users.users_document(_settings(tmp_path)).location == str(tmp_path / "web-users")
