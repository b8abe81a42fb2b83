"""Browser-test fixtures: the web client in front of the live stack, and Debian's Chromium."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from PIL import Image

from ml_common.devstack import wait_http
from tests.conftest import ROOT, LiveStack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"


@dataclass(frozen=True)
class WebClient:
    url: str
    user: str
    password: str
    backend: str


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`"
        if os.environ.get("ML_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (ML_REQUIRE_SERVICES=1 forbids skipping)")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
def web_client(
    chromium_path: Path, live_stack: LiveStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebClient]:
    """The web client, started by the live stack as `make run` starts it, with a user of ours."""
    password = secrets.token_urlsafe(16)
    user = f"tester-{secrets.token_hex(3)}"  # a fresh history in the shared Redis
    stack = live_stack.stack
    stack.start_client(
        live_stack.api_key,
        {
            "ML_CLIENT_USERS": f"{user}:{PasswordHasher().hash(password)}",
            "ML_STORAGE_DIR": str(tmp_path_factory.mktemp("web-client") / "storage"),
            "ML_SECRET_KEY": secrets.token_urlsafe(32),
        },
    )
    try:
        wait_http(f"{stack.client_url}/healthz", 60, stack.procs["client"])
        yield WebClient(stack.client_url, user, password, live_stack.backend)
    finally:
        stack.stop_process("client")


@pytest.fixture(scope="session")
def browser(chromium_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def signed_in_state(
    browser: Any, web_client: WebClient, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Sign in once per session and keep the cookies for the tests that start signed in."""
    path = tmp_path_factory.mktemp("browser-state") / "state.json"
    context = browser.new_context(base_url=web_client.url)
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("User name").fill(web_client.user)
    page.get_by_label("Password").fill(web_client.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{web_client.url}/")
    context.storage_state(path=path)
    context.close()
    return path


@pytest.fixture(scope="session")
def astronaut_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
