"""original_size: parsing and checking it (API), mapping boxes (worker), the SDK's shrink."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from ml_api.originals import check_original_size, parse_original_size, upright_size
from ml_celery.pipeline import to_original_size
from ml_common.errors import InvalidOriginalSize
from ml_common.images import ImageLimits, inspect_image
from ml_common.schemas import Box, Detection, DetectionResult
from mlprod_client.shrink import shrink

LIMITS = ImageLimits(max_pixels=40_000_000, max_side=30_000, max_aspect_ratio=20)


def _jpeg(size: tuple[int, int], orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buf, format="JPEG", exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize(("text", "size"), [("4032x3024", (4032, 3024)), (" 10X7 ", (10, 7))])
def test_original_size_reads_width_by_height(text: str, size: tuple[int, int]) -> None:
    assert parse_original_size(text) == size


@pytest.mark.parametrize(
    "text", ["", "4032", "4032x", "x3024", "0x10", "-4x3", "4.5x3", "1234567x1"]
)
def test_a_malformed_original_size_is_refused(text: str) -> None:
    with pytest.raises(InvalidOriginalSize):
        parse_original_size(text)


def test_a_shrink_rounded_either_way_is_accepted() -> None:
    assert check_original_size((4032, 3024), (1280, 960), LIMITS) == [4032, 3024]
    assert check_original_size((4247, 2825), (1280, 851), LIMITS) == [4247, 2825]  # 851.4
    assert check_original_size((1280, 960), (1280, 960), LIMITS) == [1280, 960]  # not shrunk


@pytest.mark.parametrize(
    ("claimed", "detail"),
    [((640, 480), "smaller"), ((4032, 3100), "shape"), ((3024, 4032), "shape"),
     ((40_000, 30_000), "limits")],
)  # fmt: skip
def test_an_original_size_that_cannot_be_the_photo_is_refused(
    claimed: tuple[int, int], detail: str
) -> None:
    with pytest.raises(InvalidOriginalSize, match=detail):
        check_original_size(claimed, (1280, 960), LIMITS)


def test_the_sent_image_is_measured_upright() -> None:
    data = _jpeg((960, 1280), orientation=6)  # stored portrait, shown landscape
    assert upright_size(data, inspect_image(data, LIMITS), LIMITS.max_pixels) == (1280, 960)


def _result(
    detections: list[Detection], processed: tuple[int, int] | None = None
) -> DetectionResult:
    return DetectionResult(
        width=100, height=50, model_name="m", model_version="1", inference_ms=1,
        detections=detections,
        processed_width=processed[0] if processed else None,
        processed_height=processed[1] if processed else None,
    )  # fmt: skip


def test_boxes_are_mapped_into_the_originals_pixels_and_back() -> None:
    box = Box(x_min=10, y_min=5, x_max=50, y_max=25)
    norm = Box(x_min=0.1, y_min=0.1, x_max=0.5, y_max=0.5)
    cat = Detection(label="cat", class_id=15, score=0.9, box=box, box_normalized=norm)
    mapped = to_original_size(_result([cat]), [400, 200])
    assert (mapped.width, mapped.height) == (400, 200)
    assert (mapped.processed_width, mapped.processed_height) == (100, 50)
    assert mapped.detections[0].box == Box(x_min=40, y_min=20, x_max=200, y_max=100)
    assert mapped.detections[0].box_normalized == norm
    assert mapped.processed_detections()[0].box == box  # what the annotated image draws
    assert _result([cat]).processed_detections() == [cat]


def test_the_sdk_shrinks_upright_and_only_a_larger_photo() -> None:
    data = _jpeg((3000, 4000), orientation=6)  # a phone photo held upright: 4000 x 3000
    shrunk = shrink(data, 1280)
    assert shrunk is not None
    assert shrunk.original_size == (4000, 3000) and shrunk.original_size_field == "4000x3000"
    with Image.open(io.BytesIO(shrunk.data)) as img:
        assert (img.format, img.size) == ("JPEG", (1280, 960))
        assert img.getexif().get(0x0112, 1) == 1
    assert shrink(data, 4000) is None
