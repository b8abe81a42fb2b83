"""`mlprod detect`'s parts without a server: chunks sent again after a 429 (as long as the
API's Retry-After says), the files it skips, its summary, its manifest's options, COCO results
in a ground truth's ids. Its exits and messages: tests/integration/test_cli.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlprod_client import cli
from mlprod_client.client import ApiError
from mlprod_client.cocogt import GroundTruth, GroundTruthError, coco_results
from mlprod_client.files import NOT_AN_IMAGE_CONTENT, NOT_AN_IMAGE_NAME, find_images
from mlprod_client.merge import merge_exports
from mlprod_client.outputs import Written, write_results
from mlprod_client.report import MAX_NAMED, Outcome, report


class RateLimitedApi:
    """Answers 429 to the first `refusals` batches, then takes them (a stand-in for the API)."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.keys: list[str | None] = []

    def create_batch(
        self, named: Any, *, model: Any = None, idempotency_key: Any = None, max_side: Any = None,
        min_score: Any = None,
    ) -> str:  # fmt: skip
        self.keys.append(idempotency_key)
        if self.refusals:
            self.refusals -= 1
            raise ApiError(429, "rate_limited", "more than 3 upload requests", retry_after_s=7)
        return f"batch-{len(self.keys)}"


def test_a_chunk_refused_with_429_waits_and_goes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(cli.time, "sleep", waits.append)
    manifest = cli.Manifest(tmp_path / "manifest.json", {})
    manifest.plan(["a.jpg", "b.jpg"], chunk=1)
    api = RateLimitedApi(refusals=2)
    cli.submit(api, manifest, {n: tmp_path / n for n in ("a.jpg", "b.jpg")}, None)  # type: ignore[arg-type]
    assert waits == [7, 7]
    assert [c["batch_id"] for c in manifest.chunks] == ["batch-3", "batch-4"]
    assert api.keys[:3] == [manifest.chunks[0]["key"]] * 3  # the same idempotency key again


def test_other_errors_and_endless_429s_are_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    manifest = cli.Manifest(tmp_path / "manifest.json", {})
    manifest.plan(["a.jpg"])
    with pytest.raises(ApiError):
        cli.submit(RateLimitedApi(refusals=100), manifest, {}, None)  # type: ignore[arg-type]


def test_files_that_are_not_images_by_name_or_content_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)
    (tmp_path / "sub" / "b.webp").write_bytes(b"RIFF\0\0\0\0WEBPVP8 ")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.png").write_text("not a png")
    found = find_images([tmp_path])
    assert list(found.images) == ["a.jpg", "sub/b.webp"]
    assert found.skipped == {"fake.png": NOT_AN_IMAGE_CONTENT, "notes.txt": NOT_AN_IMAGE_NAME}


def test_the_summary_names_failed_and_skipped_files_and_the_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    outcome = Outcome({"succeeded": 2, "failed": 1, "queued": 0},
                      [("bad.jpg", "invalid_image: the JPEG is truncated")])  # fmt: skip
    written = Written(tmp_path / "results.csv", ["annotated images: out/annotated"])
    assert report(outcome, {"notes.txt": NOT_AN_IMAGE_NAME}, written) == 1
    assert capsys.readouterr().err.splitlines() == [
        "done: 2 succeeded, 1 failed",
        "failed bad.jpg: invalid_image: the JPEG is truncated",
        f"skipped notes.txt: {NOT_AN_IMAGE_NAME}",
        f"results: {tmp_path / 'results.csv'}",
        "annotated images: out/annotated",
    ]
    assert report(Outcome({"succeeded": 3}), {}, written) == 0


def test_a_long_list_of_failures_is_cut_with_a_count(capsys: pytest.CaptureFixture[str]) -> None:
    failures = [(f"{i}.jpg", "cancelled") for i in range(MAX_NAMED + 7)]
    report(Outcome({"cancelled": len(failures)}, failures), {}, None)
    assert capsys.readouterr().err.splitlines()[-1] == "… and 7 more failed"


def test_a_manifest_of_a_run_with_other_options_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    first = cli.Manifest(path, {"model": None, "min_score": 0.05, "max_side": None})
    first.plan(["a.jpg"])
    cli.Manifest(path, {"model": None, "min_score": 0.05, "max_side": None})  # the same: fine
    with pytest.raises(cli.UsageError, match=r"--min-score 0\.05"):
        cli.Manifest(path, {"model": None, "min_score": None, "max_side": None})


GROUND_TRUTH = {
    "images": [{"id": 139, "file_name": "000000000139.jpg"}, {"id": 285, "file_name": "b.jpg"}],
    "categories": [{"id": 1, "name": "person"}, {"id": 88, "name": "teddy bear"}],
    "annotations": [],
}
EXPORT = {
    "images": [{"id": 1, "file_name": "val/000000000139.jpg"}, {"id": 2, "file_name": "x.jpg"}],
    "categories": [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"},
                   {"id": 88, "name": "teddy bear"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 88, "bbox": [1, 2, 3, 4], "score": 0.9},
        {"id": 2, "image_id": 1, "category_id": 17, "bbox": [1, 2, 3, 4], "score": 0.8},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.7},
    ],
}  # fmt: skip


def test_coco_results_take_the_ground_truths_ids(tmp_path: Path) -> None:
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(GROUND_TRUTH))
    results = coco_results(EXPORT, GroundTruth.load(path))
    assert results.detections == [
        {"image_id": 139, "category_id": 88, "bbox": [1, 2, 3, 4], "score": 0.9}
    ]
    assert results.unmatched_images == ["x.jpg"] and results.unknown_classes == {"cat"}


def test_coco_results_load_with_pycocotools(tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(GROUND_TRUTH))
    written = write_results("coco", [json.dumps(EXPORT).encode()], tmp_path, GroundTruth.load(path))
    [ann] = COCO(str(path)).loadRes(str(written.path)).dataset["annotations"]
    assert (ann["image_id"], ann["category_id"], ann["score"]) == (139, 88, 0.9)
    assert written.notes and "x.jpg" in written.notes[0]


@pytest.mark.parametrize("content", ["not json", '{"images": []}', "[1, 2]"])
def test_a_file_that_is_no_coco_ground_truth_says_so(tmp_path: Path, content: str) -> None:
    path = tmp_path / "annotations.json"
    path.write_text(content)
    with pytest.raises(GroundTruthError, match="not a COCO annotations file"):
        GroundTruth.load(path)


def test_label_studio_exports_of_several_batches_make_one_list() -> None:
    merged = merge_exports("labelstudio", [b'[{"data": {"image": "a"}}]', b"[]", b'[{"x": 1}]'])
    assert json.loads(merged) == [{"data": {"image": "a"}}, {"x": 1}]
