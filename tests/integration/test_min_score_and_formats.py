"""On a real stack (the model on real photos): `min_score` lets a result keep scores below the
threshold, on a single upload and on a batch; a task's CSV is the batch's format; a batch's
Label Studio, YOLO and Pascal VOC exports load in their ecosystems' libraries, from the API
and from `mlprod detect --format`."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from ml_api.exports import CSV_COLUMNS
from tests.conftest import MLPROD, ROOT, LiveStack, encode, photo, storage_independent
from tests.integration.test_batches import export, post_batch, wait_batch
from tests.unit.test_labelformats import LS_CONFIG

pytestmark = [pytest.mark.integration, storage_independent("min_score and the label formats")]
ONE_STACK = pytest.mark.parametrize("live_stack", ["valkey"], indirect=True)
DETECTIONS = "/api/v1/detections"
LS_VALIDATOR = ROOT / "tests/labelstudio/validate_tasks.py"


def scores(status: dict[str, Any]) -> list[float]:
    return [d["score"] for d in status["result"]["detections"]]


def upload(live: LiveStack, data: bytes, **form: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{live.api_url}{DETECTIONS}", files={"file": ("coffee.jpg", data, "image/jpeg")},
        data=form, headers={**live.headers(), "Prefer": "wait=60"}, timeout=90,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@ONE_STACK
def test_min_score_keeps_the_scores_below_the_threshold(live_stack: LiveStack) -> None:
    live, data = live_stack, encode(photo("coffee"))
    default, low = upload(live, data), upload(live, data, min_score="0.05")
    threshold = live.settings.score_threshold
    assert min(scores(default)) >= threshold == default["result"]["score_threshold"]
    assert low["result"]["score_threshold"] == 0.05
    assert min(scores(low)) >= 0.05 and min(scores(low)) < threshold
    # the boxes at or above the threshold are the same ones
    assert sorted(s for s in scores(low) if s >= threshold) == sorted(scores(default))


@ONE_STACK
def test_a_batch_with_min_score_and_one_out_of_range(live_stack: LiveStack) -> None:
    live = live_stack
    files = [("coffee.jpg", encode(photo("coffee")), "image/jpeg")]
    refused = httpx.post(
        f"{live.api_url}/api/v1/batches", files=[("files", f) for f in files],
        data={"min_score": "0.01"}, headers=live.headers(), timeout=60,
    )  # fmt: skip
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_min_score"
    created = httpx.post(
        f"{live.api_url}/api/v1/batches", files=[("files", f) for f in files],
        params={"min_score": 0.05}, headers=live.headers(), timeout=60,
    )  # fmt: skip
    assert created.status_code == 202, created.text
    batch_id = created.json()["batch_id"]
    wait_batch(live, batch_id)
    [line] = export(live, f"batches/{batch_id}", "jsonl").text.splitlines()
    assert min(d["score"] for d in json.loads(line)["result"]["detections"]) < 0.3


@ONE_STACK
def test_a_tasks_csv_is_the_batch_format(live_stack: LiveStack) -> None:
    live = live_stack
    status = upload(live, encode(photo("coffee")))
    text = export(live, f"detections/{status['task_id']}", "csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS and {r["file_name"] for r in rows} == {"coffee.jpg"}
    assert all(len(r["score"].partition(".")[2]) <= 4 for r in rows)
    assert all(len(r["x_min"].partition(".")[2]) <= 2 for r in rows)


@pytest.fixture(scope="module")
def batch(live_stack: LiveStack) -> str:
    files = [("cat.jpg", encode(photo("chelsea")), "image/jpeg"),
             ("coffee.jpg", encode(photo("coffee")), "image/jpeg"),
             ("notes.txt", b"hello", "text/plain")]  # fmt: skip
    answer = post_batch(live_stack, files)
    assert answer.status_code == 202, answer.text
    batch_id: str = answer.json()["batch_id"]
    wait_batch(live_stack, batch_id)
    return batch_id


def _boxes(live: LiveStack, batch_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each image's detections, from the batch's JSON Lines."""
    lines = [json.loads(x) for x in export(live, f"batches/{batch_id}", "jsonl").text.splitlines()]
    return {x["file_name"]: x["result"]["detections"] for x in lines if x["result"]}


@pytest.fixture(scope="module")
def labelstudio_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with label-studio-sdk from uv.lock (extra `labelstudio-check`): it pins
    opencv-python-headless below the worker's, so it cannot share the project's."""
    venv = tmp_path_factory.mktemp("labelstudio") / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    python = venv / "bin/python"
    installed = subprocess.run(
        [ROOT / "scripts/lock_install.sh", python, "labelstudio-check", "none"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-4000:]
    return python


@ONE_STACK
def test_label_studio_export_validates_against_the_template(
    live_stack: LiveStack, batch: str, labelstudio_python: Path, tmp_path: Path
) -> None:
    """Label Studio's own LabelInterface validates every prediction against its object
    detection template with the 80 COCO labels; with a label missing from it, it refuses."""
    from ml_common.coco import COCO_80_LABELS

    tasks = export(live_stack, f"batches/{batch}", "labelstudio").json()
    expected = _boxes(live_stack, batch)
    assert {t["data"]["image"] for t in tasks} == set(expected) == {"cat.jpg", "coffee.jpg"}
    for task in tasks:
        [prediction] = task["predictions"]
        assert len(prediction["result"]) == len(expected[task["data"]["image"]])
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    found = {d["label"] for boxes in expected.values() for d in boxes}
    for labels, valid in ((COCO_80_LABELS, True), (sorted(found)[1:], False)):
        config = tmp_path / "config.xml"
        config.write_text(LS_CONFIG.format(labels="".join(f'<Label value="{n}"/>' for n in labels)))
        checked = subprocess.run(
            [labelstudio_python, LS_VALIDATOR, tmp_path / "tasks.json", config],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert (checked.returncode == 0) is valid, checked.stdout + checked.stderr
        assert "2 tasks checked" in checked.stdout, checked.stderr


def _yolo_and_voc(folder: Path, live: LiveStack, batch_id: str) -> dict[str, Any]:
    from globox import AnnotationSet

    for fmt in ("yolo", "voc"):
        data = export(live, f"batches/{batch_id}", fmt).content
        zipfile.ZipFile(io.BytesIO(data)).extractall(folder / fmt)
    images = folder / "images"
    images.mkdir()
    for name in ("cat.jpg", "coffee.jpg"):
        photo("chelsea" if name == "cat.jpg" else "coffee").save(images / name)
    yolo = AnnotationSet.from_yolo_darknet(folder / "yolo/labels", image_folder=images)
    return {"yolo": yolo, "voc": AnnotationSet.from_pascal_voc(folder / "voc/Annotations")}


@ONE_STACK
def test_yolo_and_voc_exports_load_with_globox(
    live_stack: LiveStack, batch: str, tmp_path: Path
) -> None:
    expected = _boxes(live_stack, batch)
    loaded = _yolo_and_voc(tmp_path, live_stack, batch)
    for fmt, found in loaded.items():
        by_image = {ann.image_id: ann for ann in found}
        assert set(by_image) == set(expected), fmt
        for name, detections in expected.items():
            assert len(by_image[name].boxes) == len(detections), (fmt, name)
            for got, want in zip(by_image[name].boxes, detections, strict=True):
                box = want["box"]
                corners = (box["x_min"], box["y_min"], box["x_max"], box["y_max"])
                assert all(abs(a - b) <= 1.5 for a, b in zip(got.ltrb, corners, strict=True))


@ONE_STACK
def test_mlprod_detect_writes_each_format(live_stack: LiveStack, tmp_path: Path) -> None:
    live, photos = live_stack, tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(encode(photo("chelsea")))
    (photos / "coffee.jpg").write_bytes(encode(photo("coffee")))
    env = {**os.environ, "MLPROD_API_KEY": live.api_key, "MLPROD_API_URL": live.api_url}
    written = {"labelstudio": "results.labelstudio.json", "yolo": "yolo/labels/cat.txt",
               "voc": "voc/Annotations/coffee.xml"}  # fmt: skip
    for fmt, path in written.items():
        out = tmp_path / fmt
        done = subprocess.run(
            [str(MLPROD), "detect", str(photos), "--format", fmt, "--out", str(out)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (out / path).is_file(), sorted(p.name for p in out.rglob("*"))
    assert len(json.loads((tmp_path / "labelstudio" / written["labelstudio"]).read_text())) == 2
    assert (tmp_path / "yolo/yolo/classes.txt").read_text().startswith("person\n")
