"""NanoDet head outputs -> Detections: GFL distance decoding, per-class NMS (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ml_celery.detectors.preprocess import Geometry
from ml_common.schemas import Box, Detection

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

STRIDES = (8, 16, 32)
REG_MAX = 10
# Cell centres sit at (index + 0.5) * stride: boxes fit the sample photos far better than at
# index * stride (astronaut: IoU 0.97 against a hand-measured box, versus 0.84).
CENTER_OFFSET = 0.5
# candidates kept per level before NMS, like NanoDet's nms_pre
MAX_CANDIDATES = 1000


def softmax(x: FloatArray, axis: int = -1) -> FloatArray:
    shifted: FloatArray = np.exp(x - x.max(axis=axis, keepdims=True))
    probabilities: FloatArray = (shifted / shifted.sum(axis=axis, keepdims=True)).astype(np.float32)
    return probabilities


def grid_centers(input_size: int, stride: int, offset: float = CENTER_OFFSET) -> FloatArray:
    """(N, 2) x, y centres of the cells of one level, row-major."""
    cells = -(-input_size // stride)
    ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
    return ((np.stack([xs.ravel(), ys.ravel()], axis=1) + offset) * stride).astype(np.float32)


def decode_distances(reg: FloatArray, stride: int, reg_max: int = REG_MAX) -> FloatArray:
    """(N, 4 * (reg_max + 1)) bin logits -> (N, 4) left, top, right, bottom distances in pixels."""
    bins = softmax(reg.reshape(-1, 4, reg_max + 1))
    return (bins @ np.arange(reg_max + 1, dtype=np.float32) * stride).astype(np.float32)


def distance_to_boxes(centers: FloatArray, distances: FloatArray, input_size: int) -> FloatArray:
    """(N, 4) x_min, y_min, x_max, y_max boxes, clipped to the network input."""
    boxes = np.concatenate([centers - distances[:, :2], centers + distances[:, 2:]], axis=1)
    clipped: FloatArray = np.clip(boxes, 0, input_size).astype(np.float32)
    return clipped


def above_threshold(scores: FloatArray, score_threshold: float) -> BoolArray:
    """Where a score reaches the threshold: the one comparison every detector applies."""
    reached: BoolArray = scores >= score_threshold
    return reached


def decode_level(
    scores: FloatArray,
    reg: FloatArray,
    stride: int,
    input_size: int,
    score_threshold: float,
    center_offset: float = CENTER_OFFSET,
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Boxes, scores and class ids of one level's (cell, class) pairs that reach the threshold."""
    cells, classes = np.nonzero(above_threshold(scores, score_threshold))
    kept_scores = scores[cells, classes]
    best = np.argsort(-kept_scores, kind="stable")[:MAX_CANDIDATES]
    cells, classes, kept_scores = cells[best], classes[best], kept_scores[best]
    distances = decode_distances(reg[cells], stride)
    centers = grid_centers(input_size, stride, center_offset)[cells]
    boxes = distance_to_boxes(centers, distances, input_size)
    return boxes, kept_scores.astype(np.float32), classes.astype(np.int64)


def iou(box: FloatArray, boxes: FloatArray) -> FloatArray:
    """IoU of one (4,) box with each of (N, 4) boxes."""
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    union = area + areas - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> IntArray:
    """Indices of the boxes greedy NMS keeps, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(int(best))
        order = order[iou(boxes[best], boxes[order]) <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def batched_nms(
    boxes: FloatArray, scores: FloatArray, class_ids: IntArray, iou_threshold: float
) -> IntArray:
    """NMS within each class separately; indices best score first."""
    keep = [
        np.flatnonzero(class_ids == c)[
            nms(boxes[class_ids == c], scores[class_ids == c], iou_threshold)
        ]
        for c in np.unique(class_ids)
    ]
    merged = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return merged[np.argsort(-scores[merged], kind="stable")]


def to_detections(
    boxes: FloatArray,
    scores: FloatArray,
    class_ids: IntArray,
    geometry: Geometry,
    labels: Sequence[str],
) -> list[Detection]:
    """Detections in original-image pixels (clipped to it), with 0..1 normalised boxes."""
    width, height = geometry.width, geometry.height
    mapped = geometry.to_original(boxes)
    mapped = np.clip(mapped, 0, [width, height, width, height]).astype(np.float32)
    scale = np.array([width, height, width, height], dtype=np.float32)
    return [
        Detection(
            label=labels[int(class_id)],
            class_id=int(class_id),
            score=float(np.clip(score, 0.0, 1.0)),
            box=Box(**_box_fields(box)),
            box_normalized=Box(**_box_fields(np.clip(box / scale, 0.0, 1.0))),
        )
        for box, score, class_id in zip(mapped, scores, class_ids, strict=True)
    ]


def _box_fields(box: FloatArray) -> dict[str, float]:
    return dict(zip(("x_min", "y_min", "x_max", "y_max"), map(float, box), strict=True))


def postprocess(
    cls_levels: Sequence[FloatArray],
    reg_levels: Sequence[FloatArray],
    geometry: Geometry,
    labels: Sequence[str],
    *,
    input_size: int,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    center_offset: float = CENTER_OFFSET,
) -> list[Detection]:
    """Decode one image's per-level (cells, classes) scores and (cells, 4 * bins) regressions."""
    decoded = [
        decode_level(scores, reg, stride, input_size, score_threshold, center_offset)
        for scores, reg, stride in zip(cls_levels, reg_levels, STRIDES, strict=True)
    ]
    boxes = np.concatenate([d[0] for d in decoded]).reshape(-1, 4)
    scores = np.concatenate([d[1] for d in decoded])
    class_ids = np.concatenate([d[2] for d in decoded])
    keep = batched_nms(boxes, scores, class_ids, iou_threshold)[:max_detections]
    return to_detections(boxes[keep], scores[keep], class_ids[keep], geometry, labels)
