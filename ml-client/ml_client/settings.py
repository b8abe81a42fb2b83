"""The web client's settings: the shared ones plus how it reaches the API, its users, sessions."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, Field, SecretStr

from ml_common.settings import EmptyIsUnset, Settings


class ClientSettings(Settings):
    """What only the web client reads, from the same ML_* variables (ML_CLIENT_*)."""

    client_api_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8000")
    client_api_key: Annotated[SecretStr | None, EmptyIsUnset] = None
    client_api_public_url: Annotated[AnyHttpUrl | None, EmptyIsUnset] = Field(
        None, description="the API as users reach it, for the page's curl example"
    )
    client_users: Annotated[SecretStr | None, EmptyIsUnset] = Field(
        None, description="name:$argon2id$..., comma-separated"
    )
    client_users_file: Annotated[Path | None, EmptyIsUnset] = None
    client_cookie_secure: bool = False
    client_session_max_age_s: int = Field(8 * 3600, ge=60)
    client_login_max_failures: int = Field(5, ge=1)
    client_login_window_s: int = Field(900, ge=1)
    client_history_max: int = Field(
        30, ge=1, description="the tasks the page keeps per user; an older one leaves the list, "
        "and its original is deleted, when a new one comes",
    )  # fmt: skip
    client_shrink_max_side: int = Field(
        1280, ge=0, description="the page shrinks a photo whose long side is larger to this "
        "before sending it (docs/performance.md says why 1280); 0 sends every photo whole",
    )  # fmt: skip

    @property
    def api_public_url(self) -> str:
        return str(self.client_api_public_url or self.client_api_url).rstrip("/")

    @property
    def client_users_path(self) -> Path:
        return self.client_users_file or self.storage_dir / "web-users"


@functools.cache
def get_client_settings() -> ClientSettings:
    """The web client's settings, read once from the environment."""
    return ClientSettings()
