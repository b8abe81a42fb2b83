"""Bad batch input against the API on real Redis (and a Redis broker with no worker): unsafe
archives, limits, another key's batch. Each is refused with a clear error before work starts."""

from __future__ import annotations

import csv
import io
import json
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from ml_api.app import create_app
from ml_api.exports import FORMULA_STARTS
from ml_common import records
from ml_common.apikeys import ApiKeyStore
from ml_common.settings import Settings
from ml_common.taskstore import RecordStore
from tests.conftest import encode, need_redis
from tests.integration.test_api_input import BROKER_DB, RESULTS_DB, input_settings, stored_files

pytestmark = pytest.mark.integration
Api = tuple[TestClient, dict[str, str]]


def jpeg(seed: int = 0) -> bytes:
    return encode(Image.new("RGB", (40, 30), (seed % 256, 90, 160)))


def zipped(entries: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            if name in links:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def tarred_with_link() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        info = tarfile.TarInfo("a.jpg")
        data = jpeg()
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("passwd.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    return buf.getvalue()


def tarred(names: list[str], folders: int = 0) -> bytes:
    """A tar.xz of a small JPEG under each name, after `folders` folder entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as archive:
        for i in range(folders):
            folder = tarfile.TarInfo(f"folder{i}")
            folder.type = tarfile.DIRTYPE
            archive.addfile(folder)
        for name in names:
            info = tarfile.TarInfo(name)
            data = jpeg()
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def settings_small(tmp_path: Path) -> Settings:
    need_redis()
    return input_settings(
        tmp_path, batch_max_files=4, batch_max_bytes=3_000_000, archive_max_ratio=50,
        batch_max_items_per_key_per_day=6,
    )  # fmt: skip


@pytest.fixture
def api(settings_small: Settings) -> Iterator[Api]:
    plain, _ = ApiKeyStore.from_settings(settings_small).create("tests")
    with TestClient(create_app(settings_small), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {plain}"}
    for url in (RESULTS_DB, BROKER_DB):
        redis.Redis.from_url(url).flushdb()


def post_batch(api: Api, parts: list[tuple[str, bytes]], **headers: str) -> object:
    client, auth = api
    files = [("files", (name, data, "application/octet-stream")) for name, data in parts]
    return client.post("/api/v1/batches", files=files, headers={**auth, **headers})


@pytest.mark.parametrize(
    ("archive", "code"),
    [
        (zipped({"../escape.jpg": jpeg()}), "unsafe_archive"),
        (zipped({"/etc/cron.d/x.jpg": jpeg()}), "unsafe_archive"),
        (zipped({"ok.jpg": jpeg(), "link.jpg": b"/etc/passwd"}, links=("link.jpg",)),
         "unsafe_archive"),
        (tarred_with_link(), "unsafe_archive"),
        (zipped({"bomb.jpg": b"\0" * 2_500_000}), "unsafe_archive"),
        (zipped({f"{i}.jpg": jpeg(i) for i in range(5)}), "batch_too_large"),
        (tarred(["n" * 1024 * 1024 + f"{i}.jpg" for i in range(3)]), "unsafe_archive"),
        (tarred(["a.jpg"], folders=4), "batch_too_large"),
    ],
    ids=["dot-dot-path", "absolute-path", "zip-symlink", "tar-symlink", "zip-bomb-ratio",
         "too-many-files", "1-mib-member-names", "folders-count-as-files"],
)  # fmt: skip
def test_unsafe_or_oversized_archive_is_refused_before_any_work(
    api: Api, settings_small: Settings, archive: bytes, code: str
) -> None:
    r = post_batch(api, [("photos.zip", archive)])
    assert r.status_code in (413, 422), r.text  # type: ignore[attr-defined]
    assert r.json()["code"] == code  # type: ignore[attr-defined]
    assert stored_files(settings_small) == []


def test_batch_without_files_is_refused(api: Api) -> None:
    client, auth = api
    r = client.post("/api/v1/batches", files={"other": ("a.jpg", jpeg())}, headers=auth)
    assert r.status_code == 422 and r.json()["code"] == "empty_batch", r.text
    r = client.post("/api/v1/batches", data={"model": ""}, headers=auth)
    assert r.status_code == 415, r.text


def test_more_parts_than_the_file_limit_is_refused(api: Api) -> None:
    r = post_batch(api, [(f"{i}.jpg", jpeg(i)) for i in range(6)])
    assert r.status_code == 413 and r.json()["code"] == "batch_too_large", r.text  # type: ignore[attr-defined]


def test_batch_over_the_byte_limit_is_refused(api: Api) -> None:
    r = post_batch(api, [(f"{i}.jpg", b"\xff" * 1_000_000) for i in range(4)])
    assert r.status_code == 413, r.text  # type: ignore[attr-defined]


def test_a_non_image_in_a_batch_fails_alone(api: Api, settings_small: Settings) -> None:
    r = post_batch(api, [("a.jpg", jpeg(1)), ("notes.txt", b"plain text"), ("b.jpg", jpeg(2))])
    assert r.status_code == 202, r.text  # type: ignore[attr-defined]
    client, auth = api
    body = client.get(f"/api/v1/batches/{r.json()['batch_id']}", headers=auth).json()  # type: ignore[attr-defined]
    assert [i["status"] for i in body["items"]] == ["queued", "failed", "queued"]
    assert body["items"][1]["error"]["type"] == "unsupported_media_type"
    assert len(stored_files(settings_small)) == 2


def test_the_daily_quota_of_batch_items_per_key(api: Api) -> None:
    assert post_batch(api, [(f"{i}.jpg", jpeg(i)) for i in range(4)]).status_code == 202  # type: ignore[attr-defined]
    r = post_batch(api, [(f"{i}.jpg", jpeg(i)) for i in range(3)])
    assert r.status_code == 413 and "a day" in r.json()["detail"], r.text  # type: ignore[attr-defined]


def test_unknown_or_another_keys_batch_is_404(api: Api, settings_small: Settings) -> None:
    client, auth = api
    batch_id = post_batch(api, [("a.jpg", jpeg())]).json()["batch_id"]  # type: ignore[attr-defined]
    other, _ = ApiKeyStore.from_settings(settings_small).create("other")
    theirs = {"Authorization": f"Bearer {other}"}
    for path in ("", "/export", "/events"):
        assert client.get(f"/api/v1/batches/{batch_id}{path}", headers=theirs).status_code == 404
    assert client.delete(f"/api/v1/batches/{batch_id}", headers=theirs).status_code == 404
    assert client.get(f"/api/v1/batches/{uuid.uuid4()}", headers=auth).status_code == 404


def test_an_idempotency_key_with_another_body_is_409(api: Api) -> None:
    key = {"Idempotency-Key": "retry-1"}
    first = post_batch(api, [("a.jpg", jpeg(1))], **key)
    again = post_batch(api, [("a.jpg", jpeg(1))], **key)
    assert first.json()["batch_id"] == again.json()["batch_id"]  # type: ignore[attr-defined]
    r = post_batch(api, [("a.jpg", jpeg(2))], **key)
    assert r.status_code == 409 and r.json()["code"] == "idempotency_key_reused"  # type: ignore[attr-defined]


def test_an_idempotency_key_with_another_callback_or_name_is_409(api: Api) -> None:
    """A retry with a new callback must not silently get the first batch, without it."""
    client, auth = api
    headers = {**auth, "Idempotency-Key": "retry-callback"}

    def send(name: str, callback: str | None) -> Any:
        data = {"callback_url": callback} if callback else None
        return client.post("/api/v1/batches", headers=headers, data=data,
                           files=[("files", (name, jpeg(1), "image/jpeg"))])  # fmt: skip

    first = send("a.jpg", None)
    assert first.status_code == 202, first.text
    assert send("a.jpg", None).json()["batch_id"] == first.json()["batch_id"]
    for name, callback in (("a.jpg", "https://example.com/hook"), ("b.jpg", None)):
        r = send(name, callback)
        assert (r.status_code, r.json()["code"]) == (409, "idempotency_key_reused"), r.text


def test_cancel_a_queued_task_then_again(api: Api) -> None:
    client, auth = api
    r = client.post("/api/v1/detections", files={"file": ("a.jpg", jpeg(), "image/jpeg")},
                    headers=auth)  # fmt: skip
    task_id = r.json()["task_id"]
    first = client.delete(f"/api/v1/detections/{task_id}", headers=auth).json()
    assert first["changed"] is True
    status = client.get(f"/api/v1/detections/{task_id}", headers=auth).json()
    assert status["status"] == "cancelled" and status["finished_at"]
    assert client.delete(f"/api/v1/detections/{task_id}", headers=auth).json()["changed"] is False


def test_no_formula_reaches_a_cell_of_the_batch_csv(api: Api) -> None:
    """File names that start like spreadsheet formulas are exported as text."""
    names = ["=1+1.jpg", "+A1.jpg", "-2+3.jpg", "@SUM(A1).jpg"]
    r = post_batch(api, [(name, jpeg(i)) for i, name in enumerate(names)])
    assert r.status_code == 202, r.text  # type: ignore[attr-defined]
    client, auth = api
    export = client.get(f"/api/v1/batches/{r.json()['batch_id']}/export?format=csv", headers=auth)  # type: ignore[attr-defined]
    assert export.status_code == 200, export.text
    rows = list(csv.reader(io.StringIO(export.text, newline="")))
    assert not [c for row in rows for c in row if c.lstrip(" ").startswith(FORMULA_STARTS)]
    assert sorted(row[0] for row in rows[1:]) == sorted(f"'{name}" for name in names)


def test_member_names_keep_their_last_part_without_control_characters(api: Api) -> None:
    """An archive member's folder and control characters never reach the batch's items."""
    names = ["photos/2024/a\r\nb.jpg", "x/\x1b[2Jc.jpg"]
    r = post_batch(api, [("photos.tar.xz", tarred(names))])
    assert r.status_code == 202, r.text  # type: ignore[attr-defined]
    client, auth = api
    body = client.get(f"/api/v1/batches/{r.json()['batch_id']}", headers=auth).json()  # type: ignore[attr-defined]
    assert [item["file_name"] for item in body["items"]] == ["ab.jpg", "[2Jc.jpg"]


def test_a_batch_cancelled_while_it_is_submitted_stays_cancelled(tmp_path: Path) -> None:
    """DELETE in the middle of a 1,500-file submission: no file after it is queued."""
    need_redis()
    settings = input_settings(tmp_path, batch_max_files=2000, batch_max_bytes=20_000_000,
                              batch_max_items_per_key_per_day=5000)  # fmt: skip
    plain, api_key = ApiKeyStore.from_settings(settings).create("tests")
    auth = {"Authorization": f"Bearer {plain}", "Idempotency-Key": "cancel-while-submitting"}
    claim = records.idempotency_key(api_key.key_id, auth["Idempotency-Key"])
    results = redis.Redis.from_url(RESULTS_DB)
    archive = zipped({f"{i:04}.jpg": jpeg(i) for i in range(1500)})
    files = [("files", ("photos.zip", archive, "application/zip"))]
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            with ThreadPoolExecutor(1) as pool:
                first = pool.submit(client.post, "/api/v1/batches", files=files, headers=auth)
                while not results.exists(claim):  # the first request has taken the key
                    assert not first.done(), first.result().text
                while True:  # the same request again answers with the batch id, as it goes
                    again = client.post("/api/v1/batches", files=files, headers=auth).json()
                    if again["total"] > 0:
                        break
                listed_at_delete = again["total"]
                r = client.delete(f"/api/v1/batches/{again['batch_id']}", headers=auth)
                assert r.status_code == 200 and r.json()["changed"] is True, r.text
                assert first.result().status_code == 202
            assert listed_at_delete < 1500, "the submission ended before the DELETE"
            body = client.get(f"/api/v1/batches/{again['batch_id']}?limit=1", headers=auth).json()
    finally:
        for url in (RESULTS_DB, BROKER_DB):
            redis.Redis.from_url(url).flushdb()
    assert body["total"] == 1500
    assert body["counts"]["cancelled"] == 1500, body["counts"]
    assert len(stored_files(settings)) < 1500  # files after the mark were never stored


def test_cancel_a_running_task_leaves_it_to_finish(api: Api, settings_small: Settings) -> None:
    """DELETE on a running task: `changed: false`, it will finish, and no cancel mark is set."""
    from ml_celery.celery_app import create_celery_app

    client, auth = api
    r = client.post("/api/v1/detections", files={"file": ("a.jpg", jpeg(), "image/jpeg")},
                    headers=auth)  # fmt: skip
    task_id = r.json()["task_id"]
    # what the worker does as it takes the task: the record's start, then Celery's STARTED
    started = {"status": "STARTED", "result": None, "task_id": task_id}
    RecordStore.connect(settings_small).start(task_id, json.dumps(started), 3600)
    create_celery_app(settings_small).backend.store_result(task_id, None, "STARTED")
    assert client.get(f"/api/v1/detections/{task_id}", headers=auth).json()["status"] == "started"
    answer = client.delete(f"/api/v1/detections/{task_id}", headers=auth).json()
    assert answer["changed"] is False and "will finish" in answer["detail"], answer
    # what the worker finds at a start (a redelivery): no cancel mark
    assert not RecordStore.connect(settings_small).start(task_id, json.dumps(started), 3600)
    assert client.get(f"/api/v1/detections/{task_id}", headers=auth).json()["status"] == "started"


def test_batch_items_count_against_the_per_minute_upload_limit(tmp_path: Path) -> None:
    """Single-file batches once went around ML_RATE_LIMIT_PER_MINUTE: each item counts now."""
    need_redis()
    settings = input_settings(tmp_path, rate_limit_per_minute=3)
    plain, _ = ApiKeyStore.from_settings(settings).create("tests")
    auth = {"Authorization": f"Bearer {plain}"}
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:

            def one_file_batch(i: int) -> int:
                files = [("files", (f"{i}.jpg", jpeg(i), "image/jpeg"))]
                return client.post("/api/v1/batches", files=files, headers=auth).status_code

            single = {"file": ("s.jpg", jpeg(9), "image/jpeg")}
            codes = [one_file_batch(0), one_file_batch(1)]
            codes.append(client.post("/api/v1/detections", files=single, headers=auth).status_code)
            codes += [one_file_batch(2), one_file_batch(3)]
            r = client.post("/api/v1/detections", files=single, headers=auth)
            codes.append(r.status_code)
    finally:
        for url in (RESULTS_DB, BROKER_DB):
            redis.Redis.from_url(url).flushdb()
    assert codes == [202, 202, 202, 429, 429, 429], codes
    assert r.json()["code"] == "rate_limited" and int(r.headers["Retry-After"]) > 0


def test_a_batch_larger_than_what_is_left_of_the_minute_takes_the_rest(tmp_path: Path) -> None:
    """A batch is refused only when the minute is full: never for its size alone."""
    need_redis()
    settings = input_settings(tmp_path, rate_limit_per_minute=3)
    plain, _ = ApiKeyStore.from_settings(settings).create("tests")
    auth = {"Authorization": f"Bearer {plain}"}
    single = {"file": ("s.jpg", jpeg(9), "image/jpeg")}
    files = [("files", (f"{i}.jpg", jpeg(i), "image/jpeg")) for i in range(5)]
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            codes = [client.post("/api/v1/detections", files=single, headers=auth).status_code]
            codes.append(client.post("/api/v1/batches", files=files, headers=auth).status_code)
            codes.append(client.post("/api/v1/detections", files=single, headers=auth).status_code)
    finally:
        for url in (RESULTS_DB, BROKER_DB):
            redis.Redis.from_url(url).flushdb()
    assert codes == [202, 202, 429], codes
