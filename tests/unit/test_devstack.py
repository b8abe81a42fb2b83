"""`make run`'s own secret key: made once, kept private, the same on every start."""

from __future__ import annotations

from pathlib import Path

from ml_common.settings import PLACEHOLDER_SECRETS
from ml_tools.devstack import dev_secret_key


def test_the_secret_is_random_private_and_kept(tmp_path: Path) -> None:
    first = dev_secret_key(tmp_path / "storage")
    assert first not in PLACEHOLDER_SECRETS and len(first) >= 32
    assert (tmp_path / "storage" / "secret-key").stat().st_mode & 0o777 == 0o600
    assert dev_secret_key(tmp_path / "storage") == first
    assert dev_secret_key(tmp_path / "other") != first
