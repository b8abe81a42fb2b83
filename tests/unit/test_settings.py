from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ml_client.settings import ClientSettings
from ml_common.settings import Settings


def test_placeholder_secret_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="ML_SECRET_KEY"):
        Settings(_env_file=None, environment="production")  # type: ignore[call-arg]
    ok = Settings(_env_file=None, environment="production", secret_key="x" * 40)  # type: ignore[arg-type, call-arg]
    assert ok.environment == "production"


def test_broker_urls() -> None:
    assert Settings(_env_file=None, broker_url="redis://h:1/0").broker_url.scheme == "redis"  # type: ignore[arg-type, call-arg]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, broker_url="http://h/")  # type: ignore[arg-type, call-arg]
    with pytest.raises(ValidationError, match="TIME_LIMIT"):
        Settings(_env_file=None, task_soft_time_limit_s=10, task_time_limit_s=5)  # type: ignore[call-arg]


def test_empty_optional_values_are_unset() -> None:
    settings = ClientSettings(_env_file=None, client_api_key="", client_users="", api_keys_file="")  # type: ignore[arg-type, call-arg]
    assert settings.client_api_key is None and settings.client_users is None
    assert settings.api_keys_file is None


def test_client_fields_belong_to_the_client_alone() -> None:
    assert not [name for name in Settings.model_fields if name.startswith("client_")]
    assert {"client_api_url", "client_users", "storage_dir"} <= set(ClientSettings.model_fields)


def test_default_folders_are_in_the_working_directory_wherever_the_code_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = ClientSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.storage_dir == tmp_path / "ml-storages"
    assert settings.model_dir == tmp_path / "ml-storages" / "models" / "nanodet-g-416"
    assert settings.client_users_path == tmp_path / "ml-storages" / "web-users"
