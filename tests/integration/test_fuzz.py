"""Property-based and schema-based fuzzing of the API on real Redis: whatever a client sends, the
answer is 202 or a 4xx JSON `{code, detail}` (never a 5xx, never a traceback), and a refused
upload stores nothing."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
import schemathesis
import uvicorn
from fastapi.testclient import TestClient
from httpx2 import Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import checks
from schemathesis.core.result import Ok

from ml_api.app import create_app
from ml_common.errors import MLProdError
from ml_common.images import ImageLimits, decode_rgb, inspect_image
from ml_common.settings import Settings
from tests.conftest import encode, need_redis, photo
from tests.integration.test_api_input import BROKER_DB, RESULTS_DB, input_settings, stored_files

pytestmark = pytest.mark.integration
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Api = tuple[TestClient, dict[str, str], Settings]


def _samples() -> list[bytes]:
    base = photo("chelsea").resize((90, 60))
    return [
        encode(base, "JPEG"),
        encode(base.convert("RGBA"), "PNG"),
        encode(base.convert("P"), "GIF"),
        encode(base, "WEBP"),
        encode(base, "BMP"),
    ]


SAMPLES = _samples()


@pytest.fixture(scope="module")
def fuzz_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    need_redis()
    # hypothesis runs one fixture for many examples: no rate limit in the way here
    return input_settings(tmp_path_factory.mktemp("fuzz"), rate_limit_per_minute=1_000_000)


@pytest.fixture(scope="module")
def api(fuzz_settings: Settings) -> Iterator[Api]:
    from ml_common.apikeys import ApiKeyStore

    plain, _ = ApiKeyStore.from_settings(fuzz_settings).create("fuzz")
    with TestClient(create_app(fuzz_settings), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {plain}"}, fuzz_settings
    for url in (RESULTS_DB, BROKER_DB):
        redis.Redis.from_url(url).flushdb()


def assert_clean_answer(response: Response, before: int, api: Api) -> None:
    """202, or a 4xx `{code, detail}` that left no stored file behind."""
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    body = response.json()
    if response.status_code == 202:
        assert body["status"] == "queued"
        return
    assert 400 <= response.status_code < 500
    assert set(body) == {"code", "detail"} and body["code"] and body["detail"]
    assert len(stored_files(api[2])) == before


def upload(api: Api, files: Any, **kwargs: Any) -> Response:
    client, auth, settings_ = api
    before = len(stored_files(settings_))
    headers = {**auth, **kwargs.pop("headers", {})}
    response = client.post("/api/v1/detections", files=files, headers=headers, **kwargs)
    assert_clean_answer(response, before, api)
    return response


names = st.text(max_size=80)
content_types = st.one_of(
    st.sampled_from(["image/jpeg", "image/png", "application/octet-stream", "text/plain", ""]),
    st.from_regex(r"[a-z]{1,10}/[a-z0-9.+-]{1,20}", fullmatch=True),
)


@FUZZ
@given(data=st.binary(max_size=4096), name=names, ctype=content_types)
def test_random_bytes(api: Api, data: bytes, name: str, ctype: str) -> None:
    upload(api, {"file": (name, data, ctype)})


@FUZZ
@given(
    sample=st.sampled_from(SAMPLES),
    at=st.floats(0, 1),
    garbage=st.binary(min_size=1, max_size=64),
    cut=st.booleans(),
)
def test_valid_images_with_garbage(
    api: Api, sample: bytes, at: float, garbage: bytes, cut: bool
) -> None:
    pos = int(at * len(sample))
    data = sample[:pos] + garbage + (b"" if cut else sample[pos + len(garbage) :])
    upload(api, {"file": ("x.jpg", data, "image/jpeg")})


@FUZZ
@given(
    field=st.one_of(st.just("file"), st.text(min_size=1, max_size=30)),
    name=names,
    ctype=content_types,
    extra=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=3),
)
def test_random_multipart_fields(
    api: Api, field: str, name: str, ctype: str, extra: dict[str, str]
) -> None:
    response = upload(api, {field: (name, SAMPLES[0], ctype)}, data=extra)
    # a part without a file name is a plain form field, not a file: 422 as for a missing file
    if field == "file" and name and "file" not in extra:
        assert response.status_code == 202, response.text
    else:
        assert response.status_code == 422, response.text


@FUZZ
@given(
    body=st.binary(max_size=2048),
    ctype=st.one_of(
        st.just("multipart/form-data; boundary=xyz"),
        st.just("multipart/form-data"),
        st.text(max_size=60).map(lambda t: f"multipart/form-data; boundary={t}"),
        st.text(max_size=40),
    ),
)
def test_random_raw_bodies(api: Api, body: bytes, ctype: str) -> None:
    response = upload(api, None, headers={"Content-Type": ctype.encode()}, content=body)
    assert response.status_code in (400, 422), response.text


@FUZZ
@given(task_id=st.text(min_size=1, max_size=200), wait=st.text(max_size=10))
def test_random_task_ids(api: Api, task_id: str, wait: str) -> None:
    client, headers, _ = api
    for path in ("", "/image", "/events"):
        url = f"/api/v1/detections/{quote(task_id, safe='')}{path}"
        r = client.get(url, params={"wait": wait}, headers=headers)
        assert 400 <= r.status_code < 500, r.text
        assert set(r.json()) == {"code", "detail"}


@settings(max_examples=300, deadline=None)
@given(
    sample=st.sampled_from(SAMPLES),
    at=st.integers(0, 600),
    garbage=st.binary(min_size=1, max_size=16),
    cut=st.booleans(),
)
def test_what_the_api_accepts_the_worker_can_decode(
    sample: bytes, at: int, garbage: bytes, cut: bool
) -> None:
    """inspect_image (API) and decode_rgb (worker) agree, and raise only domain errors."""
    pos = min(at, len(sample))
    data = sample[:pos] + garbage + (b"" if cut else sample[pos + len(garbage) :])
    try:
        info = inspect_image(data, ImageLimits(1_000_000, 1_000, 20.0))
    except MLProdError:
        return
    image = decode_rgb(data, 1_000_000)
    assert image.mode == "RGB" and image.size == (info.width, info.height)


# -- schemathesis: every operation of the OpenAPI document, against a real uvicorn server --


@pytest.fixture(scope="module")
def served(fuzz_settings: Settings) -> Iterator[tuple[str, dict[str, str]]]:
    from ml_common.apikeys import ApiKeyStore

    plain, _ = ApiKeyStore.from_settings(fuzz_settings).create("schemathesis")
    config = uvicorn.Config(
        create_app(fuzz_settings), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {plain}"}
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def openapi(served: tuple[str, dict[str, str]]) -> schemathesis.BaseSchema:
    url, _ = served
    return schemathesis.openapi.from_url(f"{url}/api/openapi.json")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_openapi_operations(
    openapi: schemathesis.BaseSchema, served: tuple[str, dict[str, str]], method: str
) -> None:
    """Schema-driven cases for each operation: no 5xx, responses as documented.

    Driven through hypothesis here: schemathesis' own pytest plugin does not run on pytest 9.
    """
    url, headers = served
    operations = [r.ok() for r in openapi.get_all_operations() if isinstance(r, Ok)]
    # /readyz answers a documented 503 here: no worker runs in this module
    chosen = [op for op in operations if op.method.upper() == method and op.path != "/readyz"]
    assert chosen
    for operation in chosen:

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case[Any]) -> None:
            if case.path.endswith("/events"):
                case.query = {**(case.query or {}), "timeout": 0.5}  # answer at once
            # Any bytes are "schema-valid" for a binary file, but only images are accepted.
            case.call_and_validate(
                base_url=url,
                headers=headers,
                timeout=15,
                excluded_checks=[checks.positive_data_acceptance],
            )

        check()


def test_palette_and_animated_samples_are_images() -> None:
    """The samples above really are what they claim (a broken sample would weaken the fuzzing)."""
    for data in SAMPLES:
        assert Image.open(io.BytesIO(data)).size == (90, 60)
