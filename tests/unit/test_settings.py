from __future__ import annotations

import pytest
from pydantic import ValidationError

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
    settings = Settings(_env_file=None, client_api_key="", client_users="")  # type: ignore[arg-type, call-arg]
    assert settings.client_api_key is None and settings.client_users is None
