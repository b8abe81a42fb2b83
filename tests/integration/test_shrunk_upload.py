"""A photo shrunk on the client (`original_size`) through the real API, worker and model: boxes
in the original photo's pixels, both sizes in the result, the annotated image drawn on what was
sent, bad sizes refused with 422, and the SDK's and `mlprod detect`'s `max_side` end to end."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from mlprod_client.cli import main as cli_main
from mlprod_client.client import AsyncClient, Client
from mlprod_client.shrink import shrink
from tests.conftest import LiveStack, launch_stack, phone_photo, stored_names

pytestmark = pytest.mark.integration
MAX_SIDE = 1280


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    with launch_stack("rabbitmq-redis", tmp_path_factory.mktemp("shrunk")) as live:
        yield live


@pytest.fixture(scope="module")
def big_photo() -> tuple[bytes, tuple[int, int]]:
    return phone_photo()


def _post(stack: LiveStack, data: bytes, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{stack.api_url}/api/v1/detections",
        files={"file": ("phone.jpg", data, "image/jpeg")},
        data=fields,
        headers=stack.headers(),
        timeout=60,
    )


def _result(stack: LiveStack, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    body = stack.wait_final(response.json()["task_id"])
    assert body["status"] == "succeeded", body
    result: dict[str, Any] = body["result"]
    return result


def _edges(result: dict[str, Any]) -> list[tuple[str, list[float]]]:
    return [(d["label"], list(d["box"].values())) for d in result["detections"]]


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


def test_a_shrunk_photo_gets_boxes_in_the_originals_pixels(
    stack: LiveStack, big_photo: tuple[bytes, tuple[int, int]]
) -> None:
    data, (width, height) = big_photo
    shrunk = shrink(data, MAX_SIDE)
    assert shrunk is not None and shrunk.original_size == (width, height)
    sent_w, sent_h = Image.open(io.BytesIO(shrunk.data)).size
    assert max(sent_w, sent_h) == MAX_SIDE and len(shrunk.data) < len(data) / 3

    whole = _result(stack, _post(stack, data))
    small = _result(stack, _post(stack, shrunk.data, original_size=f"{width}x{height}"))
    plain = _result(stack, _post(stack, shrunk.data))  # the same bytes, no size given

    assert (whole["width"], whole["height"]) == (width, height)
    assert whole["processed_width"] is None and plain["processed_width"] is None
    assert (small["width"], small["height"]) == (width, height)
    assert (small["processed_width"], small["processed_height"]) == (sent_w, sent_h)
    # the mapping itself is exact: the same detections as the plain upload, scaled
    scale = (width / sent_w, height / sent_h, width / sent_w, height / sent_h)
    scaled = [
        (label, [v * s for v, s in zip(box, scale, strict=True)]) for label, box in _edges(plain)
    ]
    for (label, box), (want_label, want) in zip(_edges(small), scaled, strict=True):
        assert label == want_label
        assert box == pytest.approx(want, abs=0.01)
    # against the whole photo: the same objects in the same places. Not to the pixel: the two
    # decodes resample differently, and one pixel of the model's 416 is 10 of this photo's, so
    # edges move by up to a few model pixels (docs/performance.md); a box left in the sent
    # image's pixels would overlap its original by a tenth at most
    assert sorted(name for name, _ in _edges(small)) == sorted(n for n, _ in _edges(whole))
    for label, want in _edges(whole):
        assert max(_iou(box, want) for got, box in _edges(small) if got == label) > 0.9


def test_the_annotated_image_is_drawn_on_the_image_sent(
    stack: LiveStack, big_photo: tuple[bytes, tuple[int, int]]
) -> None:
    data, (width, height) = big_photo
    shrunk = shrink(data, MAX_SIDE)
    assert shrunk is not None
    response = _post(stack, shrunk.data, original_size=f"{width}x{height}")
    result = _result(stack, response)
    task_id = response.json()["task_id"]
    image = httpx.get(
        f"{stack.api_url}/api/v1/detections/{task_id}/image", headers=stack.headers(), timeout=30
    )
    assert image.status_code == 200
    drawn = Image.open(io.BytesIO(image.content))
    assert drawn.size == (result["processed_width"], result["processed_height"])
    sent = np.asarray(Image.open(io.BytesIO(shrunk.data)).convert("RGB"), dtype=np.int16)
    changed = np.abs(np.asarray(drawn.convert("RGB"), dtype=np.int16) - sent).max(axis=2) > 60
    box = result["detections"][0]["box"]
    sx, sy = drawn.width / width, drawn.height / height
    left, top = round(box["x_min"] * sx), round(box["y_min"] * sy)
    bottom = round(box["y_max"] * sy)
    # the frame's left edge runs down the box's left side, on the shrunk image's scale
    assert changed[top + 20 : bottom - 20, max(0, left - 3) : left + 4].any(axis=1).mean() > 0.9


BAD_SIZES = {
    "not-a-size": "must be WIDTHxHEIGHT",
    "0x0": "must be WIDTHxHEIGHT",
    "640x480": "smaller than the image sent",  # the sent image is 1280 wide
    "4000x4000": "not the shape",
    "40000x26600": "past the limits",
}


@pytest.mark.parametrize(("value", "detail"), BAD_SIZES.items())
@pytest.mark.parametrize("where", ["form", "query"])
def test_a_bad_original_size_is_refused_and_nothing_is_kept(
    stack: LiveStack, big_photo: tuple[bytes, tuple[int, int]], value: str, detail: str,
    where: str,
) -> None:  # fmt: skip
    shrunk = shrink(big_photo[0], MAX_SIDE)
    assert shrunk is not None
    before = stored_names(stack.settings)
    response = httpx.post(
        f"{stack.api_url}/api/v1/detections",
        files={"file": ("phone.jpg", shrunk.data, "image/jpeg")},
        data={"original_size": value} if where == "form" else {},
        params={"original_size": value} if where == "query" else {},
        headers=stack.headers(),
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_original_size"
    assert detail in response.json()["detail"]
    assert stored_names(stack.settings) == before


def test_the_sdk_shrinks_with_max_side(
    stack: LiveStack, big_photo: tuple[bytes, tuple[int, int]], tmp_path: Path
) -> None:
    data, (width, height) = big_photo
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    with Client(stack.api_url, stack.api_key) as api:
        shrunk_id = api.detect(path, max_side=MAX_SIDE)
        small_id = api.detect(path, max_side=10_000)  # not larger than that: sent whole
        result = api.task(shrunk_id, wait=60)["result"]
        whole = api.task(small_id, wait=60)["result"]
    assert (result["width"], result["height"]) == (width, height)
    assert max(result["processed_width"], result["processed_height"]) == MAX_SIDE
    assert (whole["width"], whole["height"], whole["processed_width"]) == (width, height, None)

    async def run() -> dict[str, Any]:
        async with AsyncClient(stack.api_url, stack.api_key) as api:
            task_id = await api.detect(data, name="phone.jpg", max_side=1024)
            return (await api.task(task_id, wait=60))["result"]

    async_result = asyncio.run(run())
    assert (async_result["width"], async_result["height"]) == (width, height)
    assert max(async_result["processed_width"], async_result["processed_height"]) == 1024


def test_mlprod_detect_max_side_sends_a_folder_shrunk(
    stack: LiveStack,
    big_photo: tuple[bytes, tuple[int, int]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, (width, height) = big_photo
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "phone.jpg").write_bytes(data)
    small = Image.new("RGB", (320, 240), (40, 120, 200))
    small.save(folder / "small.jpg")  # below --max-side: sent as it is
    monkeypatch.setenv("MLPROD_API_KEY", stack.api_key)
    out = tmp_path / "out"
    args = [str(folder), "--api", stack.api_url, "--out", str(out), "--max-side", "1024"]
    assert cli_main(args) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    results = {row["file_name"]: row["result"] for row in rows}
    phone, small_result = results["phone.jpg"], results["small.jpg"]
    assert (phone["width"], phone["height"], phone["processed_width"]) == (width, height, 1024)
    assert (small_result["width"], small_result["processed_width"]) == (320, None)


def test_a_batch_archive_cannot_carry_original_sizes(
    stack: LiveStack, big_photo: tuple[bytes, tuple[int, int]]
) -> None:
    shrunk = shrink(big_photo[0], MAX_SIDE)
    assert shrunk is not None
    response = httpx.post(
        f"{stack.api_url}/api/v1/batches",
        files=[("files", ("a.jpg", shrunk.data, "image/jpeg")),
               ("files", ("b.jpg", shrunk.data, "image/jpeg"))],
        data={"original_size": [shrunk.original_size_field]},  # one for two files
        headers=stack.headers(),
        timeout=30,
    )  # fmt: skip
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_original_size"
