"""Browser-test fixtures: the web client in front of the live stack, and Debian's Chromium."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from PIL import Image

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
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


@dataclass(frozen=True)
class WebClient:
    url: str
    user: str
    password: str
    backend: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the web client exited with {proc.returncode} before {url} was up")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"{url} not up after {timeout_s}s")


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
    chromium_path: Path, live_stack: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebClient]:
    """Start only the web client (uvicorn, its own process) in front of the live stack's API."""
    base = tmp_path_factory.mktemp("web-client")
    password = secrets.token_urlsafe(16)
    user = f"tester-{secrets.token_hex(3)}"  # a fresh history in the shared Redis
    port = _free_port()
    env = {
        **os.environ,
        "ML_ENVIRONMENT": "development",
        "ML_CLIENT_API_URL": live_stack.api_url,
        "ML_CLIENT_API_KEY": live_stack.api_key,
        "ML_CLIENT_USERS": f"{user}:{PasswordHasher().hash(password)}",
        "ML_RESULT_BACKEND": str(live_stack.settings.result_backend),
        "ML_STORAGE_DIR": str(base / "storage"),
        "ML_SECRET_KEY": secrets.token_urlsafe(32),
        "PYTHONUNBUFFERED": "1",
    }
    log = (base / "client.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "ml_client.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port),
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    try:
        _wait_up(f"http://127.0.0.1:{port}/healthz", proc)
        yield WebClient(f"http://127.0.0.1:{port}", user, password, live_stack.backend)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


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
