"""The page shrinks a big phone photo before sending it, and draws the boxes over the photo."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.browser.conftest import DESKTOP, Watch
from tests.conftest import DEFAULT_STACK, phone_photo

pytestmark = [
    pytest.mark.browser,
    DEFAULT_STACK,
]
DETECTION_TIMEOUT_MS = 120_000
PAGE_MAX_SIDE = 1280  # ClientSettings.client_shrink_max_side's default


def _is_upload(request: Any) -> bool:
    return request.method == "POST" and request.url.endswith("/app/uploads")


def test_a_big_photo_is_sent_shrunk_and_its_boxes_are_drawn_in_place(
    browser: Any, web_client: Any, signed_in_state: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    data, (width, height) = phone_photo()  # 12 MP, stored turned with EXIF orientation 6
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    context = browser.new_context(
        base_url=web_client.url, storage_state=str(signed_in_state), **DESKTOP
    )
    page = context.new_page()
    watch = Watch.on(page)
    page.goto("/")
    page.wait_for_selector("html[data-ready]", state="attached")
    with page.expect_response(lambda r: _is_upload(r.request)) as answer:
        page.get_by_label("Choose images…").set_input_files(str(path))
    assert answer.value.status == 202

    card = page.get_by_test_id("task-card").filter(has_text="phone.jpg").first
    expect(card.get_by_test_id("task-status")).to_have_text("Done", timeout=DETECTION_TIMEOUT_MS)
    task_id = answer.value.json()["task_id"]
    result = page.request.get(f"/app/tasks/{task_id}").json()["result"]
    # the page sent original_size: the boxes are in the photo's pixels, the model saw the copy
    assert (result["width"], result["height"]) == (width, height)
    assert max(result["processed_width"], result["processed_height"]) == PAGE_MAX_SIDE
    # what the server received (the web client keeps it): the shrunk copy, upright
    received = page.request.get(f"/app/tasks/{task_id}/original").body()
    assert len(received) < len(data) / 4, "the photo went whole"
    upright = Image.open(io.BytesIO(received))
    assert upright.size == (result["processed_width"], result["processed_height"])
    assert upright.width > upright.height  # landscape, as the photo is shown

    image = card.get_by_role("img", name=re.compile("with the detected objects outlined"))
    expect(image).to_be_visible()
    # the card shows the photo itself, upright, at its own size; not the shrunk copy
    natural = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [width, height]
    strongest = max(result["detections"], key=lambda d: d["score"])
    frame = card.locator('g.frame[data-index="0"] rect.box__frame').first
    shown, drawn = image.bounding_box(), frame.bounding_box()
    scale = shown["width"] / width
    box = strongest["box"]
    assert drawn["x"] - shown["x"] == pytest.approx(box["x_min"] * scale, abs=2)
    assert drawn["y"] - shown["y"] == pytest.approx(box["y_min"] * scale, abs=2)
    assert drawn["width"] == pytest.approx((box["x_max"] - box["x_min"]) * scale, abs=3)
    assert drawn["height"] == pytest.approx((box["y_max"] - box["y_min"]) * scale, abs=3)
    assert not watch.unexpected()
    context.close()
