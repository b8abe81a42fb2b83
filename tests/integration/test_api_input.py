"""The API against real Redis (records, rate limits) and a real Redis broker with no worker:
every bad input gets a clear 4xx JSON error and leaves nothing behind."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from ml_api.app import create_app
from ml_common.apikeys import ApiKeyStore
from ml_common.settings import Settings
from tests.conftest import encode, need, photo, reachable

pytestmark = pytest.mark.integration
RESULTS_DB = "redis://localhost:6379/3"
BROKER_DB = "redis://localhost:6379/4"


def input_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings on the local Redis (results and broker), with small upload limits."""
    fields: dict[str, Any] = {
        "storage_dir": tmp / "storage",
        "broker_url": BROKER_DB,
        "result_backend": RESULTS_DB,
        "max_upload_bytes": 200_000,
        "max_image_pixels": 4_000_000,
        **overrides,
    }
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    need(reachable("localhost", 6379), "Redis is not running on localhost:6379")
    return input_settings(tmp_path)


@pytest.fixture
def api(api_settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    plain, _ = ApiKeyStore(api_settings.api_keys_path).create("tests")
    with TestClient(create_app(api_settings), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {plain}"}
    for url in (RESULTS_DB, BROKER_DB):
        redis.Redis.from_url(url).flushdb()


def stored_files(settings: Settings) -> list[Path]:
    return [p for p in settings.storage_dir.rglob("*") if p.is_file() and p.suffix != ".json"]


def post(api: tuple[TestClient, dict[str, str]], files: object = None, **kwargs: object) -> object:
    client, headers = api
    return client.post("/api/v1/detections", files=files, headers=headers, **kwargs)


def test_accepts_a_photo_and_stores_it(api: tuple[TestClient, dict[str, str]],
                                       api_settings: Settings) -> None:  # fmt: skip
    r = post(api, {"file": ("x.jpg", encode(photo("coffee")), "image/jpeg")})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    [stored] = stored_files(api_settings)
    assert stored.name == f"{task_id}.jpg"
    status = api[0].get(f"/api/v1/detections/{task_id}", headers=api[1]).json()
    assert status["status"] == "queued"
    assert status["started_at"] is None and status["result"] is None


@pytest.mark.parametrize(
    ("files", "status", "code"),
    [
        ({"file": ("empty.jpg", b"", "image/jpeg")}, 422, "invalid_image"),
        ({"file": ("fake.jpg", b"this is not an image" * 10, "image/jpeg")}, 415,
         "unsupported_media_type"),
        ({"file": ("t.jpg", encode(photo("astronaut"))[:3000], "image/jpeg")}, 422,
         "invalid_image"),
        ({"file": ("t.png", encode(photo("coffee"), "PNG")[:5000], "image/png")}, 422,
         "invalid_image"),
        ({"picture": ("x.jpg", b"abc", "image/jpeg")}, 422, "validation_error"),
        (None, 422, "validation_error"),
    ],
    ids=["empty", "not-an-image", "truncated-jpeg", "truncated-png", "wrong-field", "no-file"],
)  # fmt: skip
def test_bad_uploads_get_clear_errors_and_store_nothing(
    api: tuple[TestClient, dict[str, str]],
    api_settings: Settings,
    files: object,
    status: int,
    code: str,
) -> None:
    r = post(api, files, data={"other": "x"} if files is None else None)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code
    assert body["detail"]
    assert "Traceback" not in r.text
    assert stored_files(api_settings) == []


def test_a_lying_extension_is_stored_under_the_real_type(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings
) -> None:
    r = post(
        api,
        {
            "file": (
                "../../etc/passwd.jpg",
                encode(photo("coffee").resize((240, 160)), "PNG"),
                "image/gif",
            )
        },
    )
    assert r.status_code == 202
    [stored] = stored_files(api_settings)
    assert stored.suffix == ".png"
    assert stored.is_relative_to(api_settings.storage_dir / "upload")


def test_too_large_upload_is_413(api: tuple[TestClient, dict[str, str]],
                                 api_settings: Settings) -> None:  # fmt: skip
    big = encode(photo("astronaut"), "PNG")  # ~500 kB > 200 kB limit
    r = post(api, {"file": ("big.png", big, "image/png")})
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"
    assert stored_files(api_settings) == []


def test_decompression_bomb_is_refused(api: tuple[TestClient, dict[str, str]]) -> None:
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")  # 400 Mpx in a few kB
    assert len(bomb) < 200_000
    r = post(api, {"file": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 422
    assert r.json()["code"] == "image_too_large"


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic dXNlcjpwYXNz"])
def test_uploads_need_a_valid_key(api: tuple[TestClient, dict[str, str]],
                                  header: str | None) -> None:  # fmt: skip
    client, _ = api
    headers = {"Authorization": header} if header else {}
    r = client.post("/api/v1/detections", files={"file": ("x.jpg", b"x", "image/jpeg")},
                    headers=headers)  # fmt: skip
    assert r.status_code == 401
    assert r.json()["code"] == "not_authenticated"
    assert r.headers["www-authenticate"] == "Bearer"


def test_unknown_and_malformed_task_ids(api: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = api
    r = client.get("/api/v1/detections/7b0a3c2e-8f5e-4c8b-9a7d-2f4b6c1d9e0f", headers=headers)
    assert r.status_code == 404 and r.json()["code"] == "task_not_found"
    r = client.get("/api/v1/detections/not-a-uuid", headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = client.get("/api/v1/detections/..%2F..%2Fetc%2Fpasswd/image", headers=headers)
    assert r.status_code in (404, 422)


def test_health_docs_and_security_headers(api: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = api
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/docs").status_code == 200


def test_accepted_image_kinds(api: tuple[TestClient, dict[str, str]]) -> None:
    base = photo("chelsea").resize((225, 150))
    cases = {
        "webp": encode(base, "WEBP"),
        "bmp": encode(base, "BMP"),
        "gif": encode(base.convert("P"), "GIF"),
        "cmyk": encode(base.convert("CMYK"), "JPEG"),
        "alpha": encode(base.convert("RGBA"), "PNG"),
        "grey16": encode(Image.fromarray(__import__("numpy").asarray(base.convert("L"))
                                          .astype("uint16") * 256), "PNG"),
    }  # fmt: skip
    for name, data in cases.items():
        r = post(api, {"file": (name, io.BytesIO(data), "application/octet-stream")})
        assert r.status_code == 202, (name, r.text)
