"""The 80 COCO object categories in the order COCO-80 detectors predict them, and their ids in
the 91-id space of the COCO annotations (what COCO tools and exports use)."""

from __future__ import annotations

COCO_80_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# The 91-id space of the original COCO annotations (TF Object Detection API label maps use it,
# 1-based); ids 12, 26, 29, 30, 45, 66, 68, 69, 71 and 83 were never used for any object.
COCO_91_UNUSED_IDS: frozenset[int] = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83})
COCO_91_TO_80: dict[int, int] = {
    coco_id: index
    for index, coco_id in enumerate(i for i in range(1, 91) if i not in COCO_91_UNUSED_IDS)
}
COCO_80_TO_91: dict[int, int] = {index: coco_id for coco_id, index in COCO_91_TO_80.items()}
