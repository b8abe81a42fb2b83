"""Drawing detections: true colours, one per class, input untouched."""

from __future__ import annotations

from PIL import Image

from ml_celery.annotate import class_colour, draw_detections, text_colour
from ml_common.schemas import Box, Detection


def detection(class_id: int, label: str, box: tuple[float, float, float, float]) -> Detection:
    x_min, y_min, x_max, y_max = box
    return Detection(
        label=label,
        class_id=class_id,
        score=0.87,
        box=Box(x_min=x_min, y_min=y_min, x_max=x_max, y_max=y_max),
        box_normalized=Box(
            x_min=x_min / 200, y_min=y_min / 100, x_max=x_max / 200, y_max=y_max / 100
        ),
    )


def test_boxes_are_drawn_in_their_class_colour_on_a_copy() -> None:
    image = Image.new("RGB", (200, 100), (128, 128, 128))
    annotated = draw_detections(image, [detection(0, "person", (20, 40, 120, 90))])
    assert annotated is not image
    assert annotated.mode == "RGB"
    assert annotated.size == image.size
    assert image.getpixel((20, 60)) == (128, 128, 128)
    assert annotated.getpixel((20, 60)) == class_colour(0)  # left edge, RGB as given
    assert annotated.getpixel((70, 65)) == (128, 128, 128)  # inside stays clear


def test_the_label_tag_sits_above_the_box() -> None:
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    annotated = draw_detections(image, [detection(16, "dog", (30, 50, 150, 95))])
    tag = annotated.crop((30, 30, 150, 50))
    colours = {colour for _, colour in tag.getcolors(maxcolors=10_000) or []}
    assert class_colour(16) in colours
    assert text_colour(class_colour(16)) in colours


def test_a_box_at_the_top_edge_keeps_its_tag_inside_the_image() -> None:
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    annotated = draw_detections(image, [detection(41, "cup", (150, 0, 200, 60))])
    assert annotated.getpixel((199, 5)) == class_colour(41)


def test_classes_get_distinct_colours() -> None:
    colours = [class_colour(i) for i in range(80)]
    assert len(set(colours)) == 80
    assert text_colour((255, 255, 0)) == (0, 0, 0)
    assert text_colour((0, 0, 160)) == (255, 255, 255)


def test_non_rgb_input_is_converted() -> None:
    annotated = draw_detections(Image.new("L", (50, 50), 10), [])
    assert annotated.mode == "RGB"
