"""The model registry: served models, routing, folders, manifests, YOLOX decoding, fetching."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ml_celery.detectors.manifest import read_labels, read_manifest
from ml_celery.detectors.postprocess import MAX_CANDIDATES
from ml_celery.detectors.tflite_ssd import output_roles
from ml_celery.detectors.yolox import anchor_points, decode_yolox, expected_anchors
from ml_celery.model_prep.fetch import ChecksumMismatch, fetch, main
from ml_common.errors import DetectorUnavailable, UnknownModel
from ml_common.models import (
    CATALOG,
    ModelSpec,
    default_model,
    model_folder,
    model_queue,
    resolve_model,
    served_models,
    worker_queues,
)
from ml_common.records import ReadyModel, ready_key
from ml_common.settings import Settings


def _settings(**kwargs: object) -> Settings:
    return Settings(_env_file=None, **kwargs)  # type: ignore[call-arg, arg-type]


def test_one_model_deployment_serves_the_model_dir(tmp_path: Path) -> None:
    settings = _settings(model_dir=tmp_path / "nanodet-g-416")
    assert served_models(settings) == ["nanodet-g-416"]
    assert resolve_model(settings, None) == "nanodet-g-416"
    assert resolve_model(settings, "nanodet-g-416") == "nanodet-g-416"
    with pytest.raises(UnknownModel, match="serves: nanodet-g-416"):
        resolve_model(settings, "yolox-nano")


def test_models_come_from_a_comma_list_with_the_default_first(tmp_path: Path) -> None:
    settings = _settings(models="nanodet-g-416, yolox-nano", default_model="yolox-nano")
    assert served_models(settings) == ["yolox-nano", "nanodet-g-416"]
    assert default_model(settings) == resolve_model(settings, "") == "yolox-nano"
    with pytest.raises(UnknownModel, match="yolox-nano, nanodet-g-416"):
        resolve_model(settings, "yolox-s")
    assert model_queue(settings, "yolox-nano") == "detections.yolox-nano"
    assert worker_queues(settings) == [
        "detections",
        "detections.yolox-nano",
        "detections.nanodet-g-416",
    ]


def test_a_default_outside_the_models_is_refused() -> None:
    with pytest.raises(ValueError, match="ML_DEFAULT_MODEL"):
        _settings(models="nanodet-g-416", default_model="yolox-nano")


def test_model_folders(tmp_path: Path) -> None:
    settings = _settings(
        model_dir=tmp_path / "models" / "nanodet-g-416",
        model_dirs={"yolox-nano": str(tmp_path / "shared")},
    )
    assert model_folder(settings, "nanodet-g-416") == tmp_path / "models" / "nanodet-g-416"
    assert model_folder(settings, "yolox-nano") == tmp_path / "shared"
    assert model_folder(settings, "mine") == tmp_path / "models" / "mine"
    moved = settings.model_copy(update={"models_dir": tmp_path / "x"})
    assert model_folder(moved, "mine") == tmp_path / "x" / "mine"


def test_ready_beacons_name_their_model() -> None:
    key = ready_key("host", 7, "yolox-nano")
    assert key == "mlprod:ready:yolox-nano:host:7"
    beacon = ReadyModel("yolox-nano", "v2")
    assert ReadyModel.from_json(beacon.to_json()) == beacon
    assert ReadyModel.from_json("ready") is None


def _user_model(tmp_path: Path, meta: dict[str, object], labels: str | None = None) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"weights")
    (folder / "model.json").write_text(json.dumps(meta))
    if labels is not None:
        (folder / "labels.txt").write_text(labels)
    return folder


def test_a_user_manifest_names_format_labels_and_version(tmp_path: Path) -> None:
    folder = _user_model(
        tmp_path, {"format": "yolox_onnx", "labels": "labels.txt", "version": "3"}, "a\n\nb\n"
    )
    manifest = read_manifest("mine", folder, _settings())
    assert (manifest.format, manifest.labels, manifest.version) == ("yolox_onnx", ("a", "b"), "3")
    assert manifest.file == folder / "model.onnx"


def test_a_model_without_version_is_versioned_by_its_file(tmp_path: Path) -> None:
    folder = _user_model(tmp_path, {"format": "yolox_onnx"})
    digest = hashlib.sha256(b"weights").hexdigest()[:12]
    assert read_manifest("mine", folder, _settings()).version == f"sha256-{digest}"


@pytest.mark.parametrize(
    ("meta", "labels", "message"),
    [
        ({"format": "caffe"}, None, "format 'caffe' is not one of"),
        ({"format": "yolox_onnx", "file": "gone.onnx"}, None, "no gone.onnx in"),
        ({"format": "yolox_onnx", "labels": "labels.txt"}, "\n\n", "labels.txt: labels file has"),
        ({"format": "yolox_onnx", "labels": "absent.txt"}, None, "absent.txt: labels file not"),
    ],
)
def test_a_bad_manifest_names_the_file(
    tmp_path: Path, meta: dict[str, object], labels: str | None, message: str
) -> None:
    folder = _user_model(tmp_path, meta, labels)
    with pytest.raises(DetectorUnavailable, match=message):
        read_manifest("mine", folder, _settings())


def test_an_unreadable_manifest_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.json").write_text("{not json")
    with pytest.raises(DetectorUnavailable, match=r"model\.json: not a readable JSON"):
        read_manifest("m", folder, _settings())
    (folder / "model.json").write_text("[1]")
    with pytest.raises(DetectorUnavailable, match="must be a JSON object"):
        read_manifest("m", folder, _settings())
    with pytest.raises(DetectorUnavailable):
        read_labels(folder / "absent")


def test_yolox_anchor_points_cover_every_stride() -> None:
    grid, stride = anchor_points(416)
    assert len(grid) == len(stride) == expected_anchors(416) == 3549
    assert grid[0].tolist() == [0, 0] and grid[1].tolist() == [1, 0]
    assert stride[0, 0] == 8 and stride[-1, 0] == 32


def test_yolox_decode_places_a_box_on_its_grid_cell() -> None:
    raw = np.zeros((3549, 85), dtype=np.float32)
    # cell (x=3, y=2) of stride 8 (index 2 * 52 + 3): centre (3.5, 2.5) * 8, size e^1 * 8
    raw[2 * 52 + 3] = [0.5, 0.5, 1.0, 1.0, 0.9, *([0.0] * 15), 0.8, *([0.0] * 64)]
    boxes, scores, classes = decode_yolox(raw, 416, 0.3)
    assert classes.tolist() == [15]
    assert scores[0] == pytest.approx(0.72)
    half = np.exp(1.0) * 8 / 2
    assert boxes[0] == pytest.approx([28 - half, 20 - half, 28 + half, 20 + half], abs=1e-4)
    assert len(decode_yolox(raw, 416, 0.73)[0]) == 0  # obj x cls below the threshold


@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.6])
def test_yolox_decode_keeps_exactly_the_pairs_of_the_whole_product(threshold: float) -> None:
    """Only anchors whose objectness reaches the threshold are multiplied out; the pairs, their
    order and their boxes are those of objectness x class score over the whole output."""
    rng = np.random.default_rng(7)
    raw = rng.random((3549, 85), dtype=np.float32)
    raw[:, 4] **= 4  # most anchors empty, as in a real output
    raw[:, 5:] **= 6
    raw[::50, 5] = 1.0  # a class score of exactly 1: the product equals the objectness
    scores = raw[:, 4:5] * raw[:, 5:]
    anchors, classes = np.nonzero(scores >= threshold)
    kept = scores[anchors, classes]
    order = np.argsort(-kept, kind="stable")[:MAX_CANDIDATES]
    boxes, got_scores, got_classes = decode_yolox(raw, 416, threshold)
    assert got_classes.tolist() == classes[order].tolist()
    assert got_scores.tolist() == kept[order].tolist()
    grid, stride = anchor_points(416)
    rows = anchors[order]
    centres = (raw[rows, :2] + grid[rows]) * stride[rows]
    sizes = np.exp(np.minimum(raw[rows, 2:4], 20.0)) * stride[rows]
    want = np.clip(np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1), 0, 416)
    assert np.array_equal(boxes, want.astype(np.float32))


def test_tflite_outputs_are_told_apart_by_name_or_shape() -> None:
    named = [{"name": n, "shape": [1, 10]} for n in ("scores", "num", "classes", "boxes")]
    assert output_roles(named) == {"scores": 0, "count": 1, "classes": 2, "boxes": 3}
    anonymous = [
        {"name": "o0", "shape": [1, 10, 4]},
        {"name": "o1", "shape": [1, 10]},
        {"name": "o2", "shape": [1, 10]},
        {"name": "o3", "shape": [1]},
    ]
    assert output_roles(anonymous) == {"boxes": 0, "classes": 1, "scores": 2, "count": 3}
    with pytest.raises(ValueError, match="four outputs"):
        output_roles(anonymous[:3])


def _spec_for(data: bytes) -> ModelSpec:
    return replace(CATALOG["yolox-nano"], sha256=hashlib.sha256(data).hexdigest())


def test_fetch_takes_a_local_folder_and_writes_a_manifest(tmp_path: Path) -> None:
    source = tmp_path / "shared"
    source.mkdir()
    (source / "yolox_nano.onnx").write_bytes(b"onnx bytes")
    (source / "LICENSE").write_text("Apache-2.0")
    spec = _spec_for(b"onnx bytes")
    out = fetch(spec, tmp_path / "out", source)
    assert (out / "yolox_nano.onnx").read_bytes() == b"onnx bytes"
    assert json.loads((out / "model.json").read_text())["format"] == "yolox_onnx"
    assert (out / "LICENSE").is_file()
    assert fetch(spec, out, tmp_path / "never-read") == out


def test_a_checksum_mismatch_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "yolox_nano.onnx"
    source.write_bytes(b"tampered")
    out = tmp_path / "out"
    with pytest.raises(ChecksumMismatch, match="expected c789161e"):
        fetch(CATALOG["yolox-nano"], out, source)
    assert not out.exists()  # no file, no manifest, no staged leftovers, no empty folder
    out.mkdir()
    (out / "keep.txt").write_text("the user's")
    with pytest.raises(ChecksumMismatch):
        fetch(CATALOG["yolox-nano"], out, source)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # a folder it found stays as it was


def test_fetch_cli_reports_a_mismatch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "bad.onnx"
    source.write_bytes(io.BytesIO(b"x").getvalue())
    assert main(["yolox-nano", "--from", str(source), "--out", str(tmp_path / "o")]) == 1
    assert "sha256" in caplog.text


def test_fetch_downloads_from_the_source_when_no_copy_is_given(tmp_path: Path) -> None:
    published = tmp_path / "published.onnx"
    published.write_bytes(b"published bytes")
    spec = replace(_spec_for(b"published bytes"), url=published.as_uri())
    out = fetch(spec, tmp_path / "out")
    assert (out / "yolox_nano.onnx").read_bytes() == b"published bytes"
