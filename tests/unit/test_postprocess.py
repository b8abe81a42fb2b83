"""NanoDet output decoding: distances, NMS, mapping back to the image."""

from __future__ import annotations

import numpy as np
import pytest

from ml_celery.detectors.postprocess import (
    REG_MAX,
    above_threshold,
    batched_nms,
    decode_distances,
    distance_to_boxes,
    grid_centers,
    iou,
    nms,
    postprocess,
    softmax,
    to_detections,
)
from ml_celery.detectors.preprocess import Geometry, letterbox_geometry, stretch_geometry
from ml_common.coco import COCO_80_LABELS

BINS = REG_MAX + 1


def one_hot_reg(cells: int, sides: tuple[int, int, int, int]) -> np.ndarray:
    """Regression logits whose softmax puts (almost) all mass on bin `side` for each side."""
    reg = np.full((cells, 4, BINS), -50.0, dtype=np.float32)
    for side, bin_index in enumerate(sides):
        reg[:, side, bin_index] = 50.0
    return reg.reshape(cells, 4 * BINS)


def test_softmax_sums_to_one() -> None:
    probabilities = softmax(np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 1000.0]], np.float32))
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities[1], 1 / 3, rtol=1e-6)


def test_grid_centers_are_row_major() -> None:
    centers = grid_centers(32, 8, offset=0.5)
    assert centers.shape == (16, 2)
    np.testing.assert_array_equal(centers[[0, 1, 4]], [[4, 4], [12, 4], [4, 12]])
    np.testing.assert_array_equal(grid_centers(32, 8, offset=0.0)[5], [8, 8])


def test_distances_are_expected_bin_times_stride() -> None:
    distances = decode_distances(one_hot_reg(2, (0, 1, 2, 10)), stride=16)
    np.testing.assert_allclose(distances, [[0, 16, 32, 160]] * 2, atol=1e-3)


def test_uniform_bins_give_the_mean_distance() -> None:
    distances = decode_distances(np.zeros((1, 4 * BINS), np.float32), stride=8)
    np.testing.assert_allclose(distances, [[40, 40, 40, 40]], rtol=1e-5)


def test_distance_to_boxes_clips_to_the_input() -> None:
    boxes = distance_to_boxes(
        np.array([[10, 10]], np.float32), np.array([[20, 5, 30, 500]], np.float32), 32
    )
    np.testing.assert_array_equal(boxes, [[0, 5, 32, 32]])


def test_iou() -> None:
    box = np.array([0, 0, 10, 10], np.float32)
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(iou(box, others), [1.0, 1 / 3, 0.0, 0.0], rtol=1e-6)


def test_nms_drops_overlaps_and_keeps_the_best() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.6, 0.9, 0.5], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1, 2])


def test_batched_nms_keeps_overlapping_boxes_of_different_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    class_ids = np.array([1, 1, 2], np.int64)
    np.testing.assert_array_equal(batched_nms(boxes, scores, class_ids, 0.5), [1, 2])


def test_batched_nms_of_nothing() -> None:
    empty = batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0), 0.5)
    assert empty.shape == (0,)


def test_to_detections_clips_and_normalises() -> None:
    geometry = Geometry(width=100, height=50, scale_x=1.0, scale_y=1.0, pad_x=0.0, pad_y=0.0)
    [detection] = to_detections(
        np.array([[-5, 10, 120, 40]], np.float32),
        np.array([0.8], np.float32),
        np.array([41]),
        geometry,
        COCO_80_LABELS,
    )
    assert detection.label == "cup"
    assert detection.class_id == 41
    assert detection.score == pytest.approx(0.8)
    assert (detection.box.x_min, detection.box.x_max) == (0.0, 100.0)
    assert detection.box_normalized.y_min == pytest.approx(0.2)
    assert detection.box_normalized.x_max == 1.0


def synthetic_heads(
    input_size: int, score: float = 0.9, class_id: int = 16
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Heads with one object: level stride 8, cell (row 1, col 1), 1 bin (8 px) on every side."""
    cells = [(input_size // stride) ** 2 for stride in (8, 16, 32)]
    cls_levels = [np.zeros((n, 80), np.float32) for n in cells]
    reg_levels = [one_hot_reg(n, (0, 0, 0, 0)) for n in cells]
    per_row = input_size // 8
    cls_levels[0][per_row + 1, class_id] = score
    cls_levels[0][per_row + 1, 0] = score / 2  # the same cell as a weaker "person"
    reg_levels[0][per_row + 1] = one_hot_reg(1, (1, 1, 1, 1))[0]
    return cls_levels, reg_levels


def test_postprocess_maps_a_synthetic_object_back_to_the_image() -> None:
    cls_levels, reg_levels = synthetic_heads(32)
    detections = postprocess(
        cls_levels,
        reg_levels,
        stretch_geometry(64, 128, 32),
        COCO_80_LABELS,
        input_size=32,
        score_threshold=0.3,
        iou_threshold=0.5,
        max_detections=10,
        center_offset=0.5,
    )
    assert [d.label for d in detections] == ["dog", "person"]
    box = detections[0].box  # centre (12, 12) +- 8 input pixels, times 2 and 4
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == pytest.approx((8, 16, 40, 80))
    assert detections[0].box_normalized.x_max == pytest.approx(40 / 64)


def test_postprocess_undoes_the_letterbox() -> None:
    cls_levels, reg_levels = synthetic_heads(32)
    geometry = letterbox_geometry(64, 32, 32)  # scale 0.5, 8 px pad top and bottom
    [dog] = postprocess(
        cls_levels,
        reg_levels,
        geometry,
        COCO_80_LABELS,
        input_size=32,
        score_threshold=0.5,
        iou_threshold=0.5,
        max_detections=10,
        center_offset=0.5,
    )
    assert (dog.box.x_min, dog.box.y_min, dog.box.x_max, dog.box.y_max) == pytest.approx(
        (8, 0, 40, 24)
    )


def test_postprocess_caps_and_thresholds() -> None:
    cls_levels, reg_levels = synthetic_heads(32)
    kwargs = {"input_size": 32, "iou_threshold": 0.5, "center_offset": 0.5}
    geometry = stretch_geometry(32, 32, 32)
    capped = postprocess(
        cls_levels, reg_levels, geometry, COCO_80_LABELS, score_threshold=0.3,
        max_detections=1, **kwargs,
    )  # fmt: skip
    assert [d.label for d in capped] == ["dog"]
    none = postprocess(
        cls_levels, reg_levels, geometry, COCO_80_LABELS, score_threshold=0.95,
        max_detections=10, **kwargs,
    )  # fmt: skip
    assert none == []


def test_a_score_that_equals_the_threshold_is_kept() -> None:
    scores = np.array([[0.25, 0.5], [0.75, 0.0]], np.float32)
    np.testing.assert_array_equal(above_threshold(scores, 0.5), [[False, True], [True, False]])
    cls_levels, reg_levels = synthetic_heads(32, score=0.5)  # dog 0.5, person 0.25
    kept = postprocess(
        cls_levels, reg_levels, stretch_geometry(32, 32, 32), COCO_80_LABELS, input_size=32,
        score_threshold=0.5, iou_threshold=0.5, max_detections=10,
    )  # fmt: skip
    assert [(d.label, d.score) for d in kept] == [("dog", 0.5)]
