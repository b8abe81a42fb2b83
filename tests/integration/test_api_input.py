"""The API against real Redis (records, rate limits) and a real Redis broker with no worker:
every bad input gets a clear 4xx JSON error and leaves nothing behind. The odd but valid
images (EXIF-rotated, animated) also go through the live stack and the real model."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from ml_api.app import create_app
from ml_api.exports import FORMULA_STARTS
from ml_common import records
from ml_common.apikeys import ApiKeyStore
from ml_common.contract import DETECT_TASK
from ml_common.settings import Settings
from ml_common.storage import LocalStorage
from tests.conftest import (
    LiveStack,
    _settings_kwargs,
    encode,
    need_redis,
    photo,
    redis_db,
    skip_on_bucket,
    storage_env,
    stored_names,
)

pytestmark = pytest.mark.integration
RESULTS_DB = redis_db(3)
BROKER_DB = redis_db(4)


def input_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings on the local Redis (results and broker), with small upload limits."""
    fields: dict[str, Any] = {
        **_settings_kwargs(storage_env(tmp / "storage")),
        "broker_url": BROKER_DB,
        "result_backend": RESULTS_DB,
        "max_upload_bytes": 200_000,
        "max_image_pixels": 4_000_000,
        **overrides,
    }
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    need_redis()
    return input_settings(tmp_path)


@pytest.fixture
def api(api_settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    plain, _ = ApiKeyStore.from_settings(api_settings).create("tests")
    with TestClient(create_app(api_settings), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {plain}"}
    for url in (RESULTS_DB, BROKER_DB):
        redis.Redis.from_url(url).flushdb()


def stored_files(settings: Settings) -> list[PurePosixPath]:
    """What is stored in the folder or the bucket, besides the API keys."""
    return [PurePosixPath(name) for name in stored_names(settings)]


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
    assert stored.parts[0] == "upload"


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


def raw_post(api: tuple[TestClient, dict[str, str]], body: bytes, ctype: str) -> Any:
    client, headers = api
    return client.post(
        "/api/v1/detections", content=body, headers={**headers, "Content-Type": ctype}
    )


def multipart(filename: bytes, data: bytes, boundary: bytes = b"b0undary") -> bytes:
    return (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename + b'"\r\nContent-Type: image/jpeg\r\n\r\n' + data
        + b"\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "ctype", "status", "code"),
    [
        (b"", "multipart/form-data; boundary=b0undary", 422, "validation_error"),
        (b"--b0undary--\r\n", "multipart/form-data; boundary=b0undary", 422, "validation_error"),
        (b"", "multipart/form-data", 400, "bad_request"),
        (b"garbage" * 10, "multipart/form-data; boundary=b0undary", 400, "bad_request"),
        (b"", "", 422, "validation_error"),
        (b'{"file": "x"}', "application/json", 422, "validation_error"),
    ],
    ids=["zero-length", "no-parts", "no-boundary", "garbage", "no-type", "json"],
)
def test_malformed_multipart_bodies(
    api: tuple[TestClient, dict[str, str]],
    api_settings: Settings,
    body: bytes,
    ctype: str,
    status: int,
    code: str,
) -> None:
    r = raw_post(api, body, ctype)
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert stored_files(api_settings) == []


def test_an_image_cut_inside_its_header_is_invalid(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings
) -> None:
    """An image cut inside its header (Pillow raised a bare OSError here: once a 500)."""
    r = post(api, {"file": ("cut.jpg", encode(photo("coffee"))[:6] + b"\x00", "image/jpeg")})
    assert (r.status_code, r.json()["code"]) == (422, "invalid_image"), r.text
    # shorter still, the format cannot even be told
    for data in (encode(photo("coffee"))[:20], encode(photo("coffee"), "PNG")[:40]):
        r = post(api, {"file": ("cut.png", data, "image/png")})
        assert (r.status_code, r.json()["code"]) == (415, "unsupported_media_type"), r.text
    assert stored_files(api_settings) == []


def animated_gif(*frames: Image.Image) -> bytes:
    buf = io.BytesIO()
    first, *rest = (f.convert("P", palette=Image.Palette.ADAPTIVE) for f in frames)
    first.save(buf, "GIF", save_all=True, append_images=rest, duration=200, loop=0)
    return buf.getvalue()


def test_palette_png_and_animated_gif_are_accepted(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings
) -> None:
    small = photo("astronaut").resize((128, 128))
    gif = animated_gif(small, Image.new("RGB", (128, 128)), small.rotate(90))
    assert Image.open(io.BytesIO(gif)).n_frames == 3
    palette = encode(small.convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    for name, data in (("anim.gif", gif), ("palette.png", palette)):
        r = post(api, {"file": (name, data, "application/octet-stream")})
        assert r.status_code == 202, r.text
    assert sorted(p.suffix for p in stored_files(api_settings)) == [".gif", ".png"]


@pytest.mark.parametrize(
    "filename",
    [
        b"../../x.jpg",
        b"..\\..\\x.jpg",
        "名前.jpg".encode(),
        b"/etc/passwd",
        b"a\x00b.jpg",
        b"x" * 1000 + b".jpg",
        b"",
        b"x" * 20_000 + b".jpg",  # past the multipart parser's header limit
    ],
    ids=["dotdot", "backslash", "unicode", "absolute", "nul", "long", "empty", "huge"],
)
def test_file_names_never_reach_the_disk(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings, filename: bytes
) -> None:
    r = raw_post(api, multipart(filename, encode(photo("coffee").resize((60, 40)))),
                 "multipart/form-data; boundary=b0undary")  # fmt: skip
    everything = stored_files(api_settings)
    if len(filename) > 10_000:
        assert (r.status_code, r.json()["code"]) == (400, "bad_request")
    else:
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        assert [p.parts[::2] for p in everything] == [("upload", f"{task_id}.jpg")]
        # the raw body's name, in the query: the same
        name = filename.decode(errors="replace")
        raw = raw_upload(api, encode(photo("coffee").resize((60, 40))), params={"filename": name})
        assert raw.status_code == 202, raw.text
        assert len(stored_files(api_settings)) == 2
        assert f"{raw.json()['task_id']}.jpg" in {p.name for p in stored_files(api_settings)}
        return
    assert stored_files(api_settings) == []


@pytest.mark.parametrize(
    "task_id",
    ["%2e%2e", "..%2F..%2Fetc%2Fpasswd", "a" * 10_000, "1'%20OR%20'1'='1", "1;DROP%20TABLE%20x",
     "%00", "7b0a3c2e-8f5e-4c8b-9a7d-2f4b6c1d9e0f%00", "*", "%7B%7D"],
    ids=["dotdot", "traversal", "long", "sql-or", "sql-drop", "nul", "uuid-nul", "star", "braces"],
)  # fmt: skip
def test_malformed_task_ids_are_4xx(api: tuple[TestClient, dict[str, str]], task_id: str) -> None:
    client, headers = api
    for suffix in ("", "/image", "/events"):
        r = client.get(f"/api/v1/detections/{task_id}{suffix}", headers=headers)
        # %2F decodes to "/" before routing: such paths match no route at all
        expected = (404, "not_found") if "%2F" in task_id else (422, "validation_error")
        assert (r.status_code, r.json()["code"]) == expected, (suffix, r.text)


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/api/v1/detections"), ("DELETE", "/api/v1/detections"),
     ("PATCH", "/api/v1/detections/7b0a3c2e-8f5e-4c8b-9a7d-2f4b6c1d9e0f"),
     ("PUT", "/api/v1/detections/7b0a3c2e-8f5e-4c8b-9a7d-2f4b6c1d9e0f"),  # DELETE cancels
     ("PUT", "/api/v1/batches"),
     ("POST", "/api/v1/detections/7b0a3c2e-8f5e-4c8b-9a7d-2f4b6c1d9e0f/image"),
     ("POST", "/healthz"), ("GET", "/api/v1/detections")],
)  # fmt: skip
def test_wrong_methods_are_405(
    api: tuple[TestClient, dict[str, str]], method: str, path: str
) -> None:
    client, headers = api
    r = client.request(method, path, headers=headers)
    assert r.status_code == 405
    assert r.json()["code"] == "method_not_allowed"
    assert r.headers["allow"]


@pytest.mark.parametrize(
    "path", ["/nope", "/api/v2/detections", "/api/v1/detections/x/y/z", "/api/v1/", "/.env"]
)
def test_unknown_paths_are_404(api: tuple[TestClient, dict[str, str]], path: str) -> None:
    client, headers = api
    r = client.get(path, headers=headers)
    assert r.status_code == 404
    assert r.json() == {"code": "not_found", "detail": "Not Found"}


def test_uploads_over_the_rate_limit_are_429(api_settings: Settings) -> None:
    limited = api_settings.model_copy(update={"rate_limit_per_minute": 2})
    store = ApiKeyStore.from_settings(limited)
    alice, bob = (store.create(name)[0] for name in ("alice", "bob"))
    seconds = time.time() % 60
    if seconds > 55:  # the limit is per clock minute: stay inside one
        time.sleep(61 - seconds)
    image = encode(photo("coffee").resize((60, 40)))
    try:
        with TestClient(create_app(limited)) as client:
            codes = []
            for key in (alice, alice, alice, bob):
                r = client.post("/api/v1/detections", files={"file": ("x.jpg", image)},
                                headers={"Authorization": f"Bearer {key}"})  # fmt: skip
                codes.append(r.status_code)
                if r.status_code == 429:
                    assert r.json()["code"] == "rate_limited"
                    assert 1 <= int(r.headers["retry-after"]) <= 60
    finally:
        redis.Redis.from_url(RESULTS_DB).flushdb()
    assert codes == [202, 202, 429, 202]  # bob has his own budget
    assert len(stored_files(limited)) == 3


def multi_picture_jpeg(*pictures: Image.Image) -> bytes:
    first, *rest = pictures
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=rest)
    return buf.getvalue()


def test_a_multi_picture_jpeg_is_taken_as_a_jpeg(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings
) -> None:
    """An MPO (as some cameras write) once failed with KeyError 'MPO': a 500."""
    small = photo("astronaut").resize((160, 160))
    data = multi_picture_jpeg(small, small.rotate(90))
    assert Image.open(io.BytesIO(data)).format == "MPO"
    r = post(api, {"file": ("stereo.mpo", data, "image/jpeg")})
    assert r.status_code == 202, r.text
    assert [p.suffix for p in stored_files(api_settings)] == [".jpg"]


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM", "TGA", "PCX", "SGI", "QOI"])
def test_other_formats_pillow_opens_are_415(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings, fmt: str
) -> None:
    r = post(api, {"file": ("x.jpg", encode(photo("coffee").resize((60, 40)), fmt), "image/jpeg")})
    assert (r.status_code, r.json()["code"]) == (415, "unsupported_media_type"), r.text
    assert "JPEG, PNG, WebP, BMP or GIF" in r.json()["detail"]
    assert stored_files(api_settings) == []


@pytest.mark.parametrize(
    ("size", "code", "words"),
    [
        ((1, 25_000), "extreme_aspect_ratio", "at most 20 times its short side"),
        ((25_000, 1), "extreme_aspect_ratio", "at most 20 times its short side"),
        ((35_000, 100), "image_too_large", "each side may be at most 30000 pixels"),
    ],
    ids=["one-pixel-wide", "one-pixel-high", "too-wide"],
)
def test_extreme_sides_and_aspect_ratios_are_refused_at_upload(
    api: tuple[TestClient, dict[str, str]],
    api_settings: Settings,
    size: tuple[int, int],
    code: str,
    words: str,
) -> None:
    """Under the pixel cap, yet no use to the model (and past what a JPEG can hold)."""
    r = post(api, {"file": ("thin.png", encode(Image.new("1", size), "PNG"), "image/png")})
    assert (r.status_code, r.json()["code"]) == (422, code), r.text
    assert words in r.json()["detail"]
    assert stored_files(api_settings) == []


# -- through the live stack and the real model ------------------------------------------------

ONE_STACK = pytest.mark.parametrize("live_stack", ["valkey"], indirect=True)


def detect(live: LiveStack, data: bytes, name: str) -> dict[str, Any]:
    """Upload through the real API and wait for the worker's result."""
    r = httpx.post(f"{live.api_url}/api/v1/detections", headers=live.headers(), timeout=30,
                   files={"file": (name, data, "application/octet-stream")})  # fmt: skip
    assert r.status_code == 202, r.text
    url = f"{live.api_url}/api/v1/detections/{r.json()['task_id']}"
    for _ in range(4):
        status: dict[str, Any] = httpx.get(
            url, params={"wait": 30}, headers=live.headers(), timeout=40
        ).json()
        if status["status"] in ("succeeded", "failed"):
            break
    assert status["status"] == "succeeded", status
    return status


def person_box(status: dict[str, Any]) -> tuple[float, float, float, float]:
    people = [d for d in status["result"]["detections"] if d["label"] == "person"]
    assert people, status["result"]["detections"]
    box = max(people, key=lambda d: d["score"])["box"]
    return box["x_min"], box["y_min"], box["x_max"], box["y_max"]


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


@ONE_STACK
def test_exif_rotated_photo_gets_boxes_of_the_upright_image(live_stack: LiveStack) -> None:
    upright = photo("astronaut").crop((0, 0, 448, 512))  # not square: width and height swap
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": back to upright
    rotated = detect(live_stack, encode(stored, quality=92, exif=exif), "rotated.jpg")
    plain = detect(live_stack, encode(upright, quality=92), "upright.jpg")
    assert (rotated["result"]["width"], rotated["result"]["height"]) == (448, 512)
    assert iou(person_box(rotated), person_box(plain)) > 0.9, (rotated, plain)
    # and not the box the model finds in the pixels as stored
    sideways = detect(live_stack, encode(stored, quality=92), "sideways.jpg")
    assert iou(person_box(rotated), person_box(sideways)) < 0.5


@ONE_STACK
def test_animated_gif_is_detected_on_its_first_frame(live_stack: LiveStack) -> None:
    person = photo("astronaut").resize((256, 256))
    status = detect(live_stack, animated_gif(person, Image.new("RGB", (256, 256))), "anim.gif")
    assert (status["result"]["width"], status["result"]["height"]) == (256, 256)
    x_min, _, x_max, _ = person_box(status)
    assert x_min < 40 and x_max > 150  # she fills the left two thirds, as in the photo
    blank_first = detect(
        live_stack, animated_gif(Image.new("RGB", (256, 256)), person), "blank-first.gif"
    )
    assert not [d for d in blank_first["result"]["detections"] if d["label"] == "person"]


@ONE_STACK
def test_a_one_pixel_wide_image_is_refused_by_the_running_api(live_stack: LiveStack) -> None:
    """1 x 39,000,000 px in a 76 kB PNG: under the pixel cap, once accepted, then retried six
    times by the worker (about 41 s) because its annotated JPEG could not be written."""
    data = encode(Image.new("1", (1, 39_000_000)), "PNG")
    r = live_stack.submit(data, "thin.png", "image/png")
    assert (r.status_code, r.json()["code"]) == (422, "image_too_large"), r.text
    assert "each side may be at most 30000 pixels" in r.json()["detail"]


@ONE_STACK
def test_a_task_whose_image_cannot_be_read_fails_at_once_without_retries(
    live_stack: LiveStack,
) -> None:
    """Only the result store's connection errors are retried: an error of the upload itself
    (here an OSError: a folder where the image should be) fails the task on the first run."""
    skip_on_bucket(live_stack.settings, "a folder where the image should be is a fault "
                   "only a folder can have")  # fmt: skip
    task_id = str(uuid.uuid4())
    key = LocalStorage(live_stack.settings.storage_dir).upload_key(task_id, "png")
    (live_stack.settings.storage_dir / key).mkdir(parents=True)
    pubsub = redis.Redis.from_url(str(live_stack.settings.result_backend)).pubsub()
    pubsub.subscribe(records.meta_key(task_id))
    live_stack.send_task(DETECT_TASK, task_id, upload_key=key, created_at=records.now_iso())
    states: list[str] = []
    deadline = time.monotonic() + 120
    while "FAILURE" not in states and "SUCCESS" not in states and time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message:
            states.append(json.loads(message["data"])["status"])
    pubsub.close()
    assert states[-1] == "FAILURE" and "RETRY" not in states, states


@pytest.mark.parametrize("model", ["yolox-s", "NANODET-G-416", "nanodet-g-416 "])
def test_an_unknown_model_is_refused_naming_the_served_ones(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings, model: str
) -> None:
    """A model field naming a model this one-model deployment does not serve"""
    r: Any = post(
        api, {"file": ("x.jpg", encode(photo("coffee")), "image/jpeg")}, data={"model": model}
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "unknown_model"
    assert r.json()["detail"].endswith("this deployment serves: nanodet-g-416")
    assert stored_files(api_settings) == []


def test_an_upload_goes_to_its_models_queue(tmp_path: Path) -> None:
    """A model field on a two-model deployment: the task waits on that model's own queue"""
    need_redis()
    settings = input_settings(
        tmp_path, models="nanodet-g-416,yolox-nano", default_model="yolox-nano"
    )
    plain, _ = ApiKeyStore.from_settings(settings).create("tests")
    broker = redis.Redis.from_url(BROKER_DB)
    photo_file = {"file": ("x.jpg", encode(photo("coffee")), "image/jpeg")}
    try:
        with TestClient(create_app(settings)) as client:
            headers = {"Authorization": f"Bearer {plain}"}
            for model in ("nanodet-g-416", "", "yolox-nano"):
                r = client.post("/api/v1/detections", files=photo_file, data={"model": model},
                                headers=headers)  # fmt: skip
                assert r.status_code == 202, r.text
            listed = client.get("/api/v1/models", headers=headers).json()
        queued = {key.decode(): broker.llen(key) for key in broker.scan_iter(match="detections.*")}
        assert sum(n for k, n in queued.items() if "yolox-nano" in k) == 2  # "" is the default
        assert sum(n for k, n in queued.items() if "nanodet-g-416" in k) == 1
        assert listed["default"] == "yolox-nano"
        assert [(m["name"], m["ready_workers"]) for m in listed["models"]] == [
            ("yolox-nano", 0),
            ("nanodet-g-416", 0),
        ]
    finally:
        for url in (RESULTS_DB, BROKER_DB):
            redis.Redis.from_url(url).flushdb()


@pytest.mark.parametrize(
    "callback_url",
    ["ftp://example.com/hook", "javascript:alert(1)", "https://user:pw@example.com/hook",
     "https://token@example.com/", "https://example.com/" + "a" * 2100, "http:///no-host",
     "https://example.com:notaport/", "https://exa mple.com/"],
    ids=["ftp", "javascript", "credentials", "user-only", "too-long", "no-host", "bad-port",
         "space"],
)  # fmt: skip
def test_a_bad_callback_url_is_422_before_anything_is_stored(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings, callback_url: str
) -> None:
    files = {"file": ("x.jpg", encode(photo("coffee")), "image/jpeg")}
    r = post(api, files, data={"callback_url": callback_url})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_callback_url"
    assert stored_files(api_settings) == []
    assert not redis.Redis.from_url(RESULTS_DB).keys("mlprod:task:*")


# -- the raw-body upload: the same checks and errors as the form's ----------------------------


def raw_upload(
    api: tuple[TestClient, dict[str, str]], data: bytes, ctype: str = "image/jpeg",
    params: dict[str, str] | None = None, **headers: str,
) -> Any:  # fmt: skip
    client, auth = api
    return client.post("/api/v1/detections", content=data, params=params,
                       headers={**auth, "Content-Type": ctype, **headers})  # fmt: skip


def test_a_raw_body_upload_is_stored_under_its_real_type_with_its_name(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings
) -> None:
    png = encode(photo("coffee").resize((120, 80)), "PNG")
    r = raw_upload(api, png, "application/octet-stream", {"filename": "cup.jpg"})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/api/v1/detections/{r.json()['task_id']}"
    [stored] = stored_files(api_settings)
    assert stored.name == f"{r.json()['task_id']}.png"
    record = redis.Redis.from_url(RESULTS_DB, decode_responses=True).hgetall(
        records.record_key(r.json()["task_id"])
    )
    assert record["name"] == "cup.jpg"
    # the name may come in a Content-Disposition header instead (RFC 6266, filename* too)
    disposition = "attachment; filename*=UTF-8''caf%C3%A9.png"
    r = raw_upload(api, png, "image/png", **{"Content-Disposition": disposition})
    record = redis.Redis.from_url(RESULTS_DB, decode_responses=True).hgetall(
        records.record_key(r.json()["task_id"])
    )
    assert record["name"] == "café.png"


BAD_RAW_CASES = {
    "empty": (b"", "image/jpeg", {}, 422, "invalid_image"),
    "not-an-image": (b"this is not an image" * 10, "image/jpeg", {}, 415,
                     "unsupported_media_type"),
    "truncated-jpeg": (encode(photo("astronaut"))[:3000], "image/jpeg", {}, 422, "invalid_image"),
    "tiff": (encode(photo("coffee").resize((60, 40)), "TIFF"), "image/tiff", {}, 415,
             "unsupported_media_type"),
    "too-large": (encode(photo("astronaut"), "PNG"), "image/png", {}, 413, "payload_too_large"),
    "bomb": (encode(Image.new("1", (20_000, 20_000)), "PNG"), "image/png", {}, 422,
             "image_too_large"),
    "unknown-model": (encode(photo("coffee")), "image/jpeg", {"model": "nope"}, 422,
                      "unknown_model"),
    "bad-callback": (encode(photo("coffee")), "image/jpeg", {"callback_url": "ftp://x/"}, 422,
                     "invalid_callback_url"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("data", "ctype", "params", "status", "code"), BAD_RAW_CASES.values(), ids=BAD_RAW_CASES
)
def test_bad_raw_uploads_get_the_forms_errors_and_store_nothing(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings, data: bytes, ctype: str,
    params: dict[str, str], status: int, code: str,
) -> None:  # fmt: skip
    raw = raw_upload(api, data, ctype, params)
    form = post(api, {"file": ("x", data, ctype)}, data=params or None)
    assert (raw.status_code, raw.json()["code"]) == (status, code), raw.text
    assert (form.status_code, form.json()["code"]) == (status, code), form.text
    assert stored_files(api_settings) == []
    assert not redis.Redis.from_url(RESULTS_DB).keys("mlprod:task:*")


def test_a_raw_stream_past_the_limit_is_413_while_it_streams(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings
) -> None:
    """No Content-Length: the body is refused once it passes the limit, not after."""
    sent = []

    def chunks() -> Iterator[bytes]:
        for _ in range(100):  # 6.4 MB offered, 200 kB allowed
            sent.append(1)
            yield b"\xff" * 65536

    r = raw_upload(api, chunks(), "image/jpeg")  # type: ignore[arg-type]
    assert (r.status_code, r.json()["code"]) == (413, "payload_too_large"), r.text
    assert stored_files(api_settings) == []


def test_idempotency_holds_on_the_raw_path_and_checks_name_and_callback(
    api: tuple[TestClient, dict[str, str]], api_settings: Settings
) -> None:
    """Issue 24: a retry with another callback or file name is 409, not the first task."""
    data = encode(photo("coffee").resize((120, 80)))
    key = {"Idempotency-Key": f"raw-{uuid.uuid4()}"}
    first = raw_upload(api, data, params={"filename": "a.jpg"}, **key)
    again = raw_upload(api, data, params={"filename": "a.jpg"}, **key)
    assert first.status_code == again.status_code == 202, again.text
    assert first.json()["task_id"] == again.json()["task_id"]
    changed = [
        {"filename": "b.jpg"},
        {"filename": "a.jpg", "callback_url": "https://example.com/hook"},
    ]
    for params in changed:
        r = raw_upload(api, data, params=params, **key)
        assert (r.status_code, r.json()["code"]) == (409, "idempotency_key_reused"), r.text
    # the same on the form: another callback is another request
    form_key = {"Idempotency-Key": f"form-{uuid.uuid4()}"}
    client, auth = api
    files = {"file": ("a.jpg", data, "image/jpeg")}
    first = client.post("/api/v1/detections", files=files, headers={**auth, **form_key})
    r = client.post("/api/v1/detections", files=files, headers={**auth, **form_key},
                    data={"callback_url": "https://example.com/hook"})  # fmt: skip
    assert first.status_code == 202 and r.status_code == 409, r.text
    assert len(stored_files(api_settings)) == 2


def test_raw_uploads_count_against_the_rate_limit_per_key(api_settings: Settings) -> None:
    limited = api_settings.model_copy(update={"rate_limit_per_minute": 2})
    store = ApiKeyStore.from_settings(limited)
    alice, bob = (store.create(name)[0] for name in ("alice", "bob"))
    if time.time() % 60 > 55:  # the limit is per clock minute: stay inside one
        time.sleep(61 - time.time() % 60)
    image = encode(photo("coffee").resize((60, 40)))
    try:
        with TestClient(create_app(limited)) as client:
            codes = [
                client.post("/api/v1/detections", content=image, headers={
                    "Authorization": f"Bearer {key}", "Content-Type": "image/jpeg",
                }).status_code
                for key in (alice, alice, alice, bob)
            ]  # fmt: skip
    finally:
        redis.Redis.from_url(RESULTS_DB).flushdb()
    assert codes == [202, 202, 429, 202]


def test_prefer_wait_without_a_worker_is_202_once_the_wait_ends(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    r = raw_upload(api, encode(photo("coffee")), **{"Prefer": "respond-async, wait=0.2"})
    assert r.status_code == 202, r.text
    assert r.headers["preference-applied"] == "wait=0.2"
    assert set(r.json()) == {"task_id", "status", "links"} and r.json()["status"] == "queued"


def test_prefer_wait_counts_in_the_keys_open_waits_and_only_its_own(
    api_settings: Settings,
) -> None:
    """With all its places for waits taken, a key's Prefer: wait is not honoured (202 at
    once, no Preference-Applied); another key's still is."""
    one_wait = api_settings.model_copy(update={"max_waits_per_key": 1})
    store = ApiKeyStore.from_settings(one_wait)
    alice, bob = ({"Authorization": f"Bearer {store.create(n)[0]}"} for n in ("alice", "bob"))
    image = encode(photo("coffee").resize((60, 40)))
    upload = {"content": image, "params": {"filename": "x.jpg"}}
    with TestClient(create_app(one_wait)) as client:
        first = client.post("/api/v1/detections", **upload,
                            headers={**alice, "Content-Type": "image/jpeg"})  # fmt: skip
        task_id = first.json()["task_id"]
        holder = threading.Thread(
            target=client.get, args=(f"/api/v1/detections/{task_id}",),
            kwargs={"params": {"wait": 3}, "headers": alice},
        )  # fmt: skip
        holder.start()
        time.sleep(0.5)  # the long-poll holds alice's one place
        prefer = {"Content-Type": "image/jpeg", "Prefer": "wait=2"}
        mine = client.post("/api/v1/detections", **upload, headers={**alice, **prefer})
        theirs = client.post("/api/v1/detections", **upload,
                             headers={**bob, **prefer, "Prefer": "wait=0.1"})  # fmt: skip
        holder.join()
    redis.Redis.from_url(RESULTS_DB).flushdb()
    assert mine.status_code == 202 and "preference-applied" not in mine.headers
    assert theirs.status_code == 202 and theirs.headers["preference-applied"] == "wait=0.1"


def attachment_name(disposition: str) -> str:
    """The file name in `Content-Disposition`'s `filename*` (RFC 5987), after checking that the
    plain `filename` beside it is printable ASCII with no quote, backslash or percent."""
    fallback = re.fullmatch(r'attachment; filename="([ !#$&-\[\]-~]*)"; (.*)', disposition)
    assert fallback, disposition
    encoded = re.fullmatch(r"filename\*=UTF-8''([A-Za-z0-9%._~-]+)", fallback.group(2))
    assert encoded, disposition
    return unquote(encoded.group(1))


@pytest.mark.parametrize(
    ("filename", "saved_as"),
    [
        (b'say "hi".jpg', 'say "hi"'),
        (b"back\\slash %41;x=y.jpg", "back\\slash %41;x=y"),
        ("名前.jpg".encode(), "名前"),
        (b'=HYPERLINK("x").jpg', '=HYPERLINK("x")'),
        (b"a\x0bb\x1fc.jpg", "a_b_c"),
    ],
    ids=["quotes", "backslash-percent", "unicode", "formula", "controls"],
)
def test_any_file_name_exports_with_one_clean_header_and_no_formula(
    api: tuple[TestClient, dict[str, str]], filename: bytes, saved_as: str
) -> None:
    """A file name with CR, LF, quotes or a formula: its exports download, named after it."""
    r = raw_post(api, multipart(filename, encode(photo("coffee").resize((60, 40)))),
                 "multipart/form-data; boundary=b0undary")  # fmt: skip
    assert r.status_code == 202, r.text
    client, headers = api
    suffixes = {"coco": ".coco.json", "labelstudio": ".labelstudio.json", "yolo": ".yolo.zip",
                "voc": ".voc.zip"}  # fmt: skip
    for fmt in ("jsonl", "csv", "coco", "labelstudio", "yolo", "voc"):
        export = client.get(
            f"/api/v1/detections/{r.json()['task_id']}/export?format={fmt}", headers=headers
        )
        assert export.status_code == 200, export.text
        disposition = export.headers["content-disposition"]
        assert "\r" not in disposition and "\n" not in disposition
        assert attachment_name(disposition) == saved_as + suffixes.get(fmt, f".{fmt}")
        if fmt == "csv":
            cells = [c for row in csv.reader(io.StringIO(export.text, newline="")) for c in row]
            assert not [c for c in cells if c.lstrip(" ").startswith(FORMULA_STARTS)], cells
