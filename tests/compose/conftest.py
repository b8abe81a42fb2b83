"""Fixtures of the compose tests: the stack that scripts/compose_ci.sh started, seen from outside.

These tests run only when selected with `-m compose` (scripts/compose_ci.sh does); `make test`'s
`-m ""` does not run them, since they need the containers that script builds and starts.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import photo

FINAL = ("succeeded", "failed")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the compose tests out unless the marker expression names them."""
    if "compose" in (config.getoption("markexpr") or ""):
        return
    left_out = [item for item in items if item.get_closest_marker("compose")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("compose")]


@dataclass(frozen=True)
class Deployment:
    """The running compose project: its public address, an API key, a web user, its compose
    command and its engine's own CLI (`podman`, or Debian's `docker` for Docker Engine)."""

    url: str
    api_key: str
    user: str
    password: str
    compose: list[str]
    engine: list[str]

    def run(self, *args: str, timeout: float = 300) -> str:
        """A compose command against the running project; its standard output."""
        done = subprocess.run(
            [*self.compose, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"compose {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout

    def config(self) -> Any:
        """The resolved compose configuration."""
        return json.loads(self.run("config", "--format", "json"))

    def worker_services(self) -> dict[str, str]:
        """Each worker service (one per model) and the model it serves."""
        services = self.config()["services"]
        return {
            name: str(service["environment"]["ML_MODELS"])
            for name, service in services.items()
            if "worker" in (service.get("command") or [])
            and "ML_MODELS" in (service.get("environment") or {})
        }

    def default_worker(self) -> tuple[str, str]:
        """The worker service of the default model (uploads without a `model` go there)."""
        default = self.config()["services"]["ml-api"]["environment"]["ML_DEFAULT_MODEL"]
        for service, model in self.worker_services().items():
            if model == default:
                return service, model
        raise AssertionError(f"no worker service serves the default model {default}")

    def containers(self, service: str) -> list[str]:
        return self.run("ps", "-q", service).split()

    def logs(self, container: str) -> str:
        """A container's log, from its engine."""
        done = subprocess.run(
            [*self.engine, "logs", container],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout + done.stderr

    def state(self, container: str, field: str) -> str:
        """One field of the engine's `inspect` of a container (`.State.Pid`, `.RestartCount`)."""
        done = subprocess.run(
            [*self.engine, "inspect", "--format", f"{{{{{field}}}}}", container],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=40
        )

    def submit(
        self, client: httpx.Client, data: bytes, name: str = "photo.jpg", media: str = "image/jpeg"
    ) -> str:
        r = client.post("/api/v1/detections", files={"file": (name, data, media)})
        assert r.status_code == 202, r.text
        return str(r.json()["task_id"])

    def wait_final(self, client: httpx.Client, task_id: str, timeout_s: float = 300) -> Any:
        deadline = time.monotonic() + timeout_s
        body: Any = {}
        while time.monotonic() < deadline:
            r = client.get(f"/api/v1/detections/{task_id}", params={"wait": 25})
            if r.status_code == 200:
                body = r.json()
                if body["status"] in FINAL:
                    return body
            else:  # a restart in progress behind the proxy: try again
                time.sleep(2)
        raise AssertionError(f"task {task_id} not final after {timeout_s}s: {body}")

    def wait_ready(
        self, workers: int = 1, model: str | None = None, timeout_s: float = 300
    ) -> dict[str, Any]:
        """Until /readyz, through the proxy, reports at least `workers` workers ready (of one
        model, or in all)."""
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        check = f"model {model}" if model else "workers"
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=10)
                body = r.json() if r.headers.get("content-type") == "application/json" else {}
                ready = str(body.get("checks", {}).get(check, "0")).split()[0]
                if r.status_code == 200 and ready.isdigit() and int(ready) >= workers:
                    return body
            except httpx.HTTPError:
                pass
            time.sleep(3)
        raise AssertionError(f"/readyz not ready with {workers} workers in {timeout_s}s: {body}")


@pytest.fixture(scope="session")
def deployment() -> Deployment:
    names = ("URL", "API_KEY", "USER", "PASSWORD", "COMMAND", "ENGINE_CLI")
    missing = [f"COMPOSE_CI_{n}" for n in names if not os.environ.get(f"COMPOSE_CI_{n}")]
    if missing:
        pytest.fail(f"run through scripts/compose_ci.sh: {', '.join(missing)} not set")
    env = {n: os.environ[f"COMPOSE_CI_{n}"] for n in names}
    return Deployment(
        env["URL"],
        env["API_KEY"],
        env["USER"],
        env["PASSWORD"],
        shlex.split(env["COMMAND"]),
        shlex.split(env["ENGINE_CLI"]),
    )


@pytest.fixture(scope="session")
def photo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photo (scikit-image's astronaut: one person, a flag), as a JPEG file."""
    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    photo("astronaut").save(path, quality=92)
    return path


@pytest.fixture(scope="session")
def big_photo(photo_file: Path) -> bytes:
    """The same photo at 12 MP as a PNG (6.6 MB): a task long enough to be caught running.
    Not a JPEG: the worker decodes a JPEG at a reduced scale, 12 MP in about 16 ms, while a
    PNG has no such decode (about 0.4 s here)."""
    import io

    buf = io.BytesIO()
    Image.open(photo_file).resize((4000, 3000)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
