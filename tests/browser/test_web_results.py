"""One result in Chromium, on a desktop and a phone screen: readable labels in the server's
colours, no sideways scroll, boxes and rows that point at each other, results to take away."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ml_api.exports import CSV_COLUMNS
from ml_common.palette import palette_json
from tests.browser.conftest import Page, WebClient
from tests.browser.pageparts import (
    LABELS_JS,
    expect,
    label_contrast,
    overlaps,
    shoot,
    upload_and_wait,
)
from tests.conftest import DEFAULT_STACK

pytestmark = [pytest.mark.browser, DEFAULT_STACK]


def test_every_label_is_readable_strongest_on_top_in_the_servers_palette(
    signed_in: Page, web_client: WebClient, photos: dict[str, Path], artifacts: Path
) -> None:
    page = signed_in.page
    palette = json.loads(page.locator("#palette").text_content())
    assert palette == palette_json()  # the one table the annotated JPEG is drawn with
    for name in ("chelsea", "motorcycle_left"):
        card = upload_and_wait(page, photos[name])
        labels = card.evaluate(LABELS_JS)
        assert labels, name
        scores = [label["score"] for label in labels]
        assert scores == sorted(scores), "the strongest box is drawn last, on top"
        for a, b in itertools.combinations(labels, 2):
            assert not overlaps(a, b), f"{name}: {a['label']} and {b['label']} collide"
        assert all(label_contrast(label) >= 4.5 for label in labels)
    shoot(page, artifacts, "labels", signed_in.screen, web_client.backend)
    assert signed_in.watch.unexpected() == []


def test_no_sideways_scroll_from_320_px_up(
    signed_in: Page, web_client: WebClient, photos: dict[str, Path], artifacts: Path
) -> None:
    page = signed_in.page
    card = upload_and_wait(page, photos["motorcycle_left"])
    badge = card.get_by_test_id("task-status")
    widths = (320, 390) if signed_in.screen == "phone" else (768, 1366)
    for width in widths:
        page.set_viewport_size({"width": width, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= width, width
        assert badge.evaluate("b => b.scrollWidth <= b.clientWidth"), "the badge is cut"
        box = badge.bounding_box()
        image = card.locator('[data-role="image"]').bounding_box()
        assert box["x"] + box["width"] <= width and image["x"] + image["width"] <= width
        shoot(page, artifacts, f"width-{width}", signed_in.screen, web_client.backend)


def _point_at(signed_in: Page, target: Any) -> None:
    if signed_in.screen == "phone":
        target.tap()
    else:
        target.hover()


def test_boxes_and_rows_point_at_each_other_classes_toggle_and_the_image_enlarges(
    signed_in: Page, web_client: WebClient, photos: dict[str, Path], artifacts: Path
) -> None:
    page = signed_in.page
    card = upload_and_wait(page, photos["chelsea"])
    strongest = card.locator("g.box").last
    index = strongest.get_attribute("data-index")
    row = card.locator(f'tr[data-index="{index}"]')
    _point_at(signed_in, strongest.locator(".box__tag"))
    expect()(row).to_have_class(re.compile("is-highlighted"))
    other = card.get_by_test_id("detection-row").last
    other.focus()
    other_box = card.locator(f'g.box[data-index="{other.get_attribute("data-index")}"]')
    expect()(other_box).to_have_class(re.compile("is-highlighted"))

    label = strongest.get_attribute("data-label")
    chip = card.locator(f'[data-testid="class-toggle"][data-label="{label}"]')
    count = card.locator(f'g.box[data-label="{label}"]').count()
    expect()(chip).to_contain_text(str(count))
    chip.click()
    expect()(chip).to_have_attribute("aria-pressed", "false")
    expect()(card.locator(f'g.box[data-label="{label}"]').filter(visible=True)).to_have_count(0)
    expect()(card.locator(f'tr[data-label="{label}"]').filter(visible=True)).to_have_count(0)
    chip.click()
    expect()(card.locator(f'g.box[data-label="{label}"]').filter(visible=True)).to_have_count(count)

    card.locator('[data-role="image"]').dispatch_event("click")  # a click on the image itself
    zoom = page.get_by_test_id("zoom")
    expect()(zoom).to_be_visible()
    expect()(zoom.get_by_test_id("detection-box").first).to_be_visible()
    view = zoom.get_by_test_id("zoom-view")
    zoom.get_by_role("button", name="Zoom in").click()
    zoom.get_by_role("button", name="Zoom in").click()
    assert view.evaluate("v => v.scrollWidth > v.clientWidth * 1.5")
    view.evaluate("v => { v.scrollLeft = 80; }")  # panned
    assert view.evaluate("v => v.scrollLeft") > 0
    shoot(page, artifacts, "zoom", signed_in.screen, web_client.backend)
    zoom.get_by_role("button", name="Close").click()
    expect()(zoom).to_be_hidden()
    card.get_by_role("button", name="Enlarge").click()
    expect()(zoom).to_be_visible()
    page.keyboard.press("Escape")
    expect()(zoom).to_be_hidden()


def _download(page: Any, trigger: Any) -> tuple[str, bytes]:
    with page.expect_download() as info:
        trigger.click()
    download = info.value
    return download.suggested_filename, Path(download.path()).read_bytes()


def test_results_can_be_taken_away(
    signed_in: Page, web_client: WebClient, photos: dict[str, Path], artifacts: Path
) -> None:
    page = signed_in.page
    card = upload_and_wait(page, photos["chelsea"])
    task_id = card.get_attribute("data-task-id")
    name, data = _download(page, card.get_by_role("button", name="Download JSON"))
    assert name == "chelsea-detections.json"
    status = json.loads(data)
    assert status["task_id"] == task_id and status["result"]["detections"]
    name, data = _download(page, card.get_by_role("button", name="Download CSV"))
    assert name == "chelsea-detections.csv"
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert len(rows) == len(status["result"]["detections"])
    # the batch export's format (ml_api.exports): the file's name, rounded numbers
    assert tuple(rows[0]) == CSV_COLUMNS and rows[0]["file_name"].startswith("chelsea")
    assert all(len(row["score"].partition(".")[2]) <= 4 for row in rows)
    name, data = _download(page, card.get_by_role("link", name="Annotated image"))
    assert name == "chelsea-annotated.jpg" and data[:3] == b"\xff\xd8\xff"

    card.get_by_role("button", name="Copy task id").click()
    expect()(card).to_contain_text("Task id copied")
    assert page.evaluate("navigator.clipboard.readText()") == task_id
    assert card.get_by_label("Task id").input_value() == task_id

    card.get_by_text("Use the API").click()
    curl = card.get_by_test_id("curl")
    expect()(curl).to_contain_text(f"/api/v1/detections/{task_id}")
    assert "Authorization: Bearer" in curl.text_content()
    docs = card.get_by_role("link", name="API documentation").get_attribute("href")
    assert docs.endswith("/api/docs")
    assert page.request.get(docs).status == 200
    shoot(page, artifacts, "take-away", signed_in.screen, web_client.backend)
