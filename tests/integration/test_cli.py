"""`mlprod detect` against a real stack, as a user runs it (the console script): a bad key,
failed and skipped files named in the summary, and COCO results that pycocotools scores
against the ground truth of ../shared/eval/coco-val2017-158 with no glue."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MLPROD, ROOT, LiveStack, encode, need, photo, storage_independent

pytestmark = [
    pytest.mark.integration,
    storage_independent("the CLI's exits, messages and COCO output"),
]
ONE_STACK = pytest.mark.parametrize("live_stack", ["valkey"], indirect=True)
EVAL_DIR = ROOT.parent / "shared" / "eval" / "coco-val2017-158"
RESUME = "run the same command again"


def mlprod(live: LiveStack, *args: str | Path, key: str | None = None, timeout: float = 300
           ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = {**os.environ, "MLPROD_API_KEY": key or live.api_key, "MLPROD_API_URL": live.api_url}
    return subprocess.run(
        [str(MLPROD), "detect", *map(str, args)], env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@ONE_STACK
def test_a_bad_key_says_401_and_no_run_again(live_stack: LiveStack, tmp_path: Path) -> None:
    (tmp_path / "cat.jpg").write_bytes(encode(photo("chelsea")))
    (tmp_path / "coffee.jpg").write_bytes(encode(photo("coffee")))
    for paths in ([tmp_path / "cat.jpg"], [tmp_path]):  # one request, and a batch
        done = mlprod(live_stack, *paths, "--out", tmp_path / "out", key="mlp_not-a-key")
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("error: 401 not_authenticated"), done.stderr
        assert RESUME not in done.stderr


@ONE_STACK
def test_the_summary_names_failed_and_skipped_files_and_the_output(
    live_stack: LiveStack, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(encode(photo("chelsea")))
    (photos / "cut.jpg").write_bytes(encode(photo("coffee"))[:600])  # a JPEG cut short
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    done = mlprod(live_stack, photos, "--out", out, "--format", "csv")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert "done: 1 succeeded, 1 failed" in lines, done.stderr
    [failed] = [line for line in lines if line.startswith("failed ")]
    assert failed.startswith("failed cut.jpg: invalid_image"), failed
    assert "skipped notes.txt: not an image by its name" in done.stderr
    assert f"results: {out / 'results.csv'}" in lines
    assert RESUME not in done.stderr

    # the same file alone goes in one request: it fails alone all the same
    alone = mlprod(live_stack, photos / "cut.jpg", "--out", tmp_path / "alone")
    assert alone.returncode == 1, alone.stderr
    assert alone.stderr.startswith("done: 1 failed\nfailed cut.jpg: invalid_image"), alone.stderr


@ONE_STACK
def test_coco_results_score_against_the_ground_truth(
    live_stack: LiveStack, tmp_path: Path, record_property: Any
) -> None:
    """The README's recipe: `--coco-gt` and `--min-score 0.05`, then COCOeval as it is."""
    need(EVAL_DIR.is_dir(), f"no {EVAL_DIR}")
    gt, out = EVAL_DIR / "annotations.json", tmp_path / "out"
    args = (EVAL_DIR / "images", "--coco-gt", gt, "--min-score", "0.05", "--out", out)
    done = mlprod(live_stack, *args, timeout=900)
    assert done.returncode == 0, done.stderr
    assert f"results: {out / 'results.coco.json'}" in done.stderr.splitlines()

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = COCO(str(gt))
    results = truth.loadRes(str(out / "results.coco.json"))
    scores = [ann["score"] for ann in results.dataset["annotations"]]
    assert min(scores) >= 0.05 and min(scores) < 0.3  # below the default threshold
    evaluation = COCOeval(truth, results, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    ap = float(evaluation.stats[0])
    record_property("coco_ap", round(ap, 4))
    # NanoDet-g-416 measured 0.248 on these 158 images (letterboxed, threshold 0.05)
    assert ap > 0.23, ap
    assert {a["image_id"] for a in results.dataset["annotations"]} <= set(truth.getImgIds())
    assert json.loads((out / "results.coco.json").read_text())[0].keys() == {
        "image_id",
        "category_id",
        "bbox",
        "score",
    }
