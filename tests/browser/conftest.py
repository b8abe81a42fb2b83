"""Browser-test fixtures: the web client in front of the live stack, and Debian's Chromium."""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from argon2 import PasswordHasher
from PIL import Image

from ml_tools.devstack import wait_http
from tests.conftest import ON_BUCKET, ROOT, LiveStack

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


AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"viewport": {"width": 1366, "height": 900}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


@dataclass(frozen=True)
class WebClient:
    url: str
    user: str
    password: str
    backend: str
    other_user: str = ""


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
    other = f"other-{secrets.token_hex(3)}"
    hashed = PasswordHasher().hash(password)
    stack = live_stack.stack
    stack.start_client(
        live_stack.api_key,
        {
            "ML_CLIENT_USERS": f"{user}:{hashed},{other}:{hashed}",
            "ML_STORAGE_DIR": str(tmp_path_factory.mktemp("web-client") / "storage"),
            "ML_SECRET_KEY": secrets.token_urlsafe(32),
        },
    )
    try:
        wait_http(f"{stack.client_url}/healthz", 60, stack.procs["client"])
        yield WebClient(stack.client_url, user, password, live_stack.backend, other)
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
def axe_script() -> Path:
    """axe-core from the npm registry, installed by `make install` (tests/browser/package.json)."""
    if not AXE.exists():
        reason = f"{AXE} is missing: run `make install` (npm ci --prefix tests/browser)"
        if os.environ.get("ML_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (ML_REQUIRE_SERVICES=1 forbids skipping)")
        pytest.skip(reason)
    return AXE


# the phone's layout is the page's own, whatever holds the files: under make test-s3 the page
# tests run on the desktop only (their images come from the bucket all the same)
SCREENS = ["desktop"] if ON_BUCKET else ["desktop", "phone"]


@pytest.fixture(scope="session", params=SCREENS)
def screen(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """The two screens every page test runs on: 1366 x 900, and a 390 x 844 phone."""
    name: str = request.param
    return name, DESKTOP if name == "desktop" else PHONE


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """scikit-image's photos as PNG files named after them."""
    from skimage import data

    folder = tmp_path_factory.mktemp("skimage")
    images = {"chelsea": data.chelsea(), "motorcycle_left": data.stereo_motorcycle()[0]}
    paths = {name: folder / f"{name}.png" for name in images}
    for name, pixels in images.items():
        Image.fromarray(pixels).save(paths[name])
    return paths


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


# Chromium's console line for an error response; `Watch.responses` has the request itself
RESPONDED_WITH_ERROR = "Failed to load resource: the server responded with a status of"


@dataclass
class Watch:
    """What a page complained of: its console errors and the error responses it received."""

    console: list[str] = field(default_factory=list)
    responses: list[tuple[int, str, str]] = field(default_factory=list)  # status, method, path

    @classmethod
    def on(cls, page: Any) -> Watch:
        watch = cls()
        page.on("console", lambda m: watch.console.append(m.text) if m.type == "error" else None)
        page.on("response", watch._response)
        return watch

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            path = urlsplit(response.url).path
            self.responses.append((response.status, response.request.method, path))

    def unexpected(self, *statuses: int) -> list[str]:
        """Console errors other than a failed load (a CSP violation, a script error), and
        error responses other than `statuses`.

        A 503 to a GET is expected too: it is the service's answer when a store is slow to
        answer (on CI's host, two suites side by side), and the page recovers from it: an event
        stream falls back to polling, a poll or the model list is tried again. The test goes on
        to check that it did; the 503 is reported as a warning, with its path.
        """
        problems = [e for e in self.console if not e.startswith(RESPONDED_WITH_ERROR)]
        for status, method, path in self.responses:
            seen = f"{status} {method} {path}"
            if status == 503 and method == "GET":
                warnings.warn(f"the page recovered from {seen}", stacklevel=2)
            elif status not in statuses:
                problems.append(seen)
        return problems


@dataclass
class Page:
    """A signed-in page on one screen, with what it complained of."""

    page: Any
    screen: str
    watch: Watch


@pytest.fixture
def signed_in(
    browser: Any, web_client: WebClient, signed_in_state: Path, screen: tuple[str, dict[str, Any]]
) -> Iterator[Page]:
    name, options = screen
    context = browser.new_context(
        base_url=web_client.url,
        storage_state=signed_in_state,
        permissions=["clipboard-read", "clipboard-write"],
        **options,
    )
    page = context.new_page()
    watch = Watch.on(page)
    page.goto("/")
    yield Page(page, name, watch)
    context.close()
