"""Drawing detections: true colours, one per class, input untouched."""

from __future__ import annotations

import io
import itertools
import uuid
from pathlib import Path

import pytest
from PIL import Image

from ml_api.annotate import annotated_image, draw_detections, place_tags, warm_up
from ml_common.errors import TaskNotFound
from ml_common.palette import (
    COLOURS,
    class_colour,
    contrast,
    hex_rgb,
    luminance,
    palette_json,
    text_colour,
)
from ml_common.schemas import Box, Detection
from ml_common.storage import LocalStorage


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
    text = text_colour(class_colour(16))  # antialiased: white text has no pure white pixel
    assert any(max(abs(a - b) for a, b in zip(c, text, strict=True)) <= 8 for c in colours)


def test_a_box_at_the_top_edge_keeps_its_tag_inside_the_image() -> None:
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    annotated = draw_detections(image, [detection(41, "cup", (150, 0, 200, 60))])
    assert annotated.getpixel((199, 5)) == class_colour(41)


def test_neighbouring_classes_differ_and_every_label_reads_at_4_5_to_1() -> None:
    colours = [class_colour(i) for i in range(80)]
    assert all(a != b for a, b in itertools.pairwise(colours))
    car, truck, cup, cell_phone = 2, 7, 41, 67  # all yellow-green once
    assert len({class_colour(i) for i in (0, 1, car, 3, truck, cup, cell_phone)}) == 7
    assert all(contrast(c, text_colour(c)) >= 4.5 for c in colours)
    assert text_colour((255, 255, 0)) == (0, 0, 0)
    assert text_colour((0, 0, 160)) == (255, 255, 255)


def test_the_page_reads_the_same_palette() -> None:
    table = palette_json()
    assert [hex_rgb(c) for c in table["colours"]] == [class_colour(i) for i in range(80)]
    assert [hex_rgb(t) for t in table["text"]] == [text_colour(class_colour(i)) for i in range(80)]


def test_classes_seen_together_get_colours_far_apart_and_person_its_own() -> None:
    """Kite and person were both yellow-orange; no colour is as dark as brown or as dull as buff."""
    person, car, bus, truck, dog, frisbee, kite, fork, knife = 0, 2, 5, 7, 16, 29, 33, 42, 43
    pairs = [(person, kite), (car, truck), (car, bus), (bus, truck), (dog, frisbee), (fork, knife)]
    for a, b in pairs:
        distance = sum((x - y) ** 2 for x, y in zip(class_colour(a), class_colour(b), strict=True))
        assert distance**0.5 > 120, (a, b)
    assert [i for i in range(80) if class_colour(i) == class_colour(person)] == [person]
    dull = {"#c2b280", "#848482", "#654522", "#882d17", "#2b3d26"}  # buff, grey, browns, olive
    assert dull.isdisjoint(COLOURS)
    assert all(luminance(class_colour(i)) > 0.1 for i in range(80))  # brown #654522 was 0.07


def test_non_rgb_input_is_converted() -> None:
    annotated = draw_detections(Image.new("L", (50, 50), 10), [])
    assert annotated.mode == "RGB"


def rotated_upload(storage: LocalStorage) -> str:
    """A grey 200 x 100 photo stored on its side (100 x 200) with an EXIF rotation tag."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    buf = io.BytesIO()
    sideways = Image.new("RGB", (200, 100), (128, 128, 128)).transpose(Image.Transpose.ROTATE_90)
    sideways.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    key = storage.upload_key(str(uuid.uuid4()), "jpg")
    storage.write(key, buf.getvalue())
    return key


def test_the_annotated_image_is_drawn_upright_on_first_request_and_kept(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    upload_key = rotated_upload(storage)
    person = detection(0, "person", (20, 40, 120, 90))
    first = annotated_image(storage, upload_key, [person], 10**6)
    drawn = Image.open(io.BytesIO(first))
    assert (drawn.format, drawn.size) == ("JPEG", (200, 100))
    red, green, blue = drawn.getpixel((20, 65))
    assert max(abs(red - 128), abs(green - 128), abs(blue - 128)) > 40  # the box's left edge
    stored = storage.annotated_key(upload_key, "jpg")
    assert storage.read(stored) == first
    storage.write(stored, b"kept")  # later requests read the stored file, drawing nothing
    assert annotated_image(storage, upload_key, [], 10**6) == b"kept"


def test_only_a_drawing_is_timed_not_a_read_back(tmp_path: Path) -> None:
    """What the API's "annotate" stage metric is fed: the seconds of each drawing."""
    storage = LocalStorage(tmp_path)
    upload_key = rotated_upload(storage)
    seconds: list[float] = []
    annotated_image(storage, upload_key, [], 10**6, seconds.append)
    annotated_image(storage, upload_key, [], 10**6, seconds.append)
    assert len(seconds) == 1
    assert seconds[0] > 0


def test_no_annotated_image_without_its_upload(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(TaskNotFound):
        annotated_image(storage, storage.upload_key(str(uuid.uuid4()), "jpg"), [], 10**6)


def test_warm_up_draws_without_error() -> None:
    warm_up()


def test_tags_that_would_collide_are_moved_apart_the_strongest_keeps_its_spot() -> None:
    same = Box(x_min=20, y_min=40, x_max=180, y_max=95)
    inner = Box(x_min=22, y_min=42, x_max=170, y_max=90)
    tags = place_tags([same, inner, same], [(60, 12), (60, 12), (50, 12)], (200, 100))
    assert tags[0] == (20, 28, 60, 12)  # above its box, as if alone
    for (ax, ay, aw, ah), (bx, by, bw, bh) in itertools.combinations(tags, 2):
        assert not (ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah)
    assert all(0 <= x <= 200 - w and 0 <= y <= 100 - h for x, y, w, h in tags)


def test_the_strongest_box_is_drawn_on_top() -> None:
    weak, strong = detection(2, "car", (20, 40, 120, 90)), detection(0, "person", (20, 40, 120, 90))
    weak = weak.model_copy(update={"score": 0.4})
    annotated = draw_detections(Image.new("RGB", (200, 100)), [strong, weak])
    assert annotated.getpixel((20, 65)) == class_colour(0)


@pytest.mark.parametrize("text", [(0, 0, 0), (255, 255, 255)])
def test_a_box_is_outlined_in_its_contrasting_colour_on_both_sides_of_its_line(
    text: tuple[int, int, int],
) -> None:
    """As the page draws it: a dark box on dry grass, a light one on a bus, both still seen."""
    class_id = next(i for i in range(80) if text_colour(class_colour(i)) == text)
    image = Image.new("RGB", (200, 100), (128, 128, 128))
    annotated = draw_detections(image, [detection(class_id, "thing", (20, 40, 120, 90))])
    # the line is 2 px wide on a 100 px short side (x 20-21), the outline 1 px either side
    row = [annotated.getpixel((x, 70)) for x in (18, 19, 20, 21, 22, 23)]
    colour = class_colour(class_id)
    assert row == [(128, 128, 128), text, colour, colour, text, (128, 128, 128)]


def test_every_box_is_drawn_under_every_tag() -> None:
    """A strong box's line never runs through a weaker detection's tag: all lines first."""
    weak = detection(2, "car", (60, 50, 180, 95)).model_copy(update={"score": 0.4})
    strong = detection(0, "person", (80, 10, 120, 45))  # its left line crosses the car's tag
    annotated = draw_detections(Image.new("RGB", (200, 100)), [strong, weak])
    tag = [annotated.getpixel((80, y)) for y in range(38, 46)]  # the tag: y 37-50, above the car
    assert class_colour(0) not in tag, tag
    assert class_colour(2) in tag
    assert annotated.getpixel((80, 30)) == class_colour(0)  # the person's line above the tag
