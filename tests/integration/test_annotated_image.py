"""GET .../image through the live stack: drawn by the API on the first request, then kept."""

from __future__ import annotations

import io
from datetime import date

import httpx
import pytest
from PIL import Image

from ml_common.storage import open_storage
from tests.conftest import STORAGE_PARAMS, LiveStack, encode, photo

# on the folder and on the bucket (where the API answers with a URL of it: followed here)
pytestmark = [pytest.mark.integration, STORAGE_PARAMS]


def annotated_key(live: LiveStack, status: dict[str, object]) -> str:
    storage = open_storage(live.settings)
    day = date.fromisoformat(str(status["created_at"])[:10])
    return storage.annotated_key(storage.upload_key(str(status["task_id"]), "jpg", day), "jpg")


def get_image(live: LiveStack, task_id: str) -> httpx.Response:
    return httpx.get(
        f"{live.api_url}/api/v1/detections/{task_id}/image",
        headers=live.headers(),
        timeout=30,
        follow_redirects=True,
    )


def test_the_image_is_drawn_on_first_request_then_served_as_stored(live_stack: LiveStack) -> None:
    task_id = live_stack.submit(encode(photo("astronaut"))).json()["task_id"]
    status = live_stack.wait_final(task_id)
    assert status["status"] == "succeeded"
    storage, key = open_storage(live_stack.settings), annotated_key(live_stack, status)
    assert not storage.exists(key)  # the worker drew nothing

    first = get_image(live_stack, task_id)
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/jpeg"
    assert storage.read(key) == first.content

    marker = encode(Image.new("RGB", (8, 8), (0, 200, 0)))
    storage.write(key, marker)  # what later requests get is the stored file, not a new drawing
    again = get_image(live_stack, task_id)
    assert again.status_code == 200
    assert again.content == marker


def test_an_exif_rotated_upload_is_annotated_upright_with_its_boxes(
    live_stack: LiveStack,
) -> None:
    upright = photo("astronaut").convert("RGB").resize((640, 512))
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to show
    sideways = encode(upright.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    task_id = live_stack.submit(sideways).json()["task_id"]
    status = live_stack.wait_final(task_id)
    assert status["status"] == "succeeded", status
    assert (status["result"]["width"], status["result"]["height"]) == (640, 512)
    [person] = [d for d in status["result"]["detections"] if d["label"] == "person"][:1]
    assert person["box"]["x_max"] < 500  # she stands on the left, as in the upright photo

    annotated = Image.open(io.BytesIO(get_image(live_stack, task_id).content)).convert("RGB")
    assert annotated.size == (640, 512)
    box = person["box"]
    edge = (int(box["x_min"]) + 1, int((box["y_min"] + box["y_max"]) / 2))
    drawn, under = annotated.getpixel(edge), upright.getpixel(edge)
    assert max(abs(a - b) for a, b in zip(drawn, under, strict=True)) > 60, (drawn, under)
