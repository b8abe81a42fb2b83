"""Flower, Celery's own monitor, as the compose profile "monitoring" runs it (the worker's app,
--url_prefix=flower, FLOWER_BASIC_AUTH): a real Flower on the real RabbitMQ asks for its
credentials and lists the worker of a running stack."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from ml_tools.ports import free_port
from ml_tools.processes import wait_http
from tests.conftest import LiveStack, launch_stack, storage_independent

pytestmark = [pytest.mark.integration, storage_independent("Flower")]

USER, PASSWORD = "operator", "flower-test-password"
WAIT_S = 60


@pytest.fixture(scope="module")
def flower_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    with launch_stack("rabbitmq-redis", tmp_path_factory.mktemp("flower-stack")) as live:
        yield live


@pytest.fixture(scope="module")
def flower(flower_stack: LiveStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Flower on the stack's broker, on loopback; its base URL (with the prefix)."""
    port = free_port()
    env = {**os.environ, **flower_stack.stack.env, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    log_path = tmp_path_factory.mktemp("flower") / "flower.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ml_celery.celery_app", "flower",
             "--url_prefix=flower", f"--port={port}", "--address=127.0.0.1"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            # the compose healthcheck's URL: it needs no credentials
            wait_http(f"http://127.0.0.1:{port}/flower/healthcheck", WAIT_S, proc)
            yield f"http://127.0.0.1:{port}/flower"
        finally:
            proc.terminate()
            proc.wait(30)


def test_flower_asks_for_its_credentials(flower: str) -> None:
    assert httpx.get(f"{flower}/", timeout=10).status_code == 401
    assert httpx.get(f"{flower}/", auth=(USER, "wrong"), timeout=10).status_code == 401
    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
    r = httpx.get(f"{flower}/", auth=(USER, PASSWORD), timeout=10)
    assert r.status_code == 200
    assert "/flower/static/" in r.text  # its pages link below the prefix the proxy routes


def test_flower_lists_the_stacks_worker(flower: str, flower_stack: LiveStack) -> None:
    # the worker's node name (ml_tools.devstack): worker-<this pid>-<the API's port>@host
    ours = f"worker-{os.getpid()}-{flower_stack.stack.api_port}@"
    deadline, names = time.monotonic() + WAIT_S, []
    while not any(name.startswith(ours) for name in names) and time.monotonic() < deadline:
        r = httpx.get(f"{flower}/api/workers", params={"refresh": "1"}, auth=(USER, PASSWORD),
                      timeout=30)  # fmt: skip
        assert r.status_code == 200, r.text
        names = list(r.json())
        time.sleep(0.5)
    assert any(name.startswith(ours) for name in names), names
