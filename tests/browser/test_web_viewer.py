"""The enlarged view and the boxes (issue 25, items 5-7): Fit shows the whole photo, labels keep
their size on screen at every zoom and stay inside the photo, the keyboard zooms and pans,
dragging pans without selecting anything (axe: test_web_lists.py); every box and label has a thin
contrasting outline, no box's edge is drawn over a label, labels are smaller on a small image;
the score slider goes as low as the result's scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ml_common.palette import contrast, hex_rgb
from tests.browser.conftest import Page, WebClient
from tests.browser.pageparts import LABELS_JS, expect, shoot, upload_and_wait
from tests.conftest import DEFAULT_STACK

pytestmark = [pytest.mark.browser, DEFAULT_STACK]

# The large view's geometry: the view, the photo in it, and each shown label's rectangle.
GEOMETRY_JS = """zoom => {
  const rect = e => { const r = e.getBoundingClientRect();
    return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  const view = zoom.querySelector('[data-testid=zoom-view]');
  const labels = Array.from(zoom.querySelectorAll('g.box'))
    .filter(g => g.getAttribute('display') !== 'none')
    .map(g => rect(g.querySelector('.box__tag')));
  return {view: rect(view), image: rect(zoom.querySelector('img')), labels,
          left: view.scrollLeft, top: view.scrollTop,
          tall: view.scrollHeight > view.clientHeight + view.scrollTop};
}"""


def _inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    slack = 1.0
    return (
        inner["x"] >= outer["x"] - slack
        and inner["y"] >= outer["y"] - slack
        and inner["x"] + inner["w"] <= outer["x"] + outer["w"] + slack
        and inner["y"] + inner["h"] <= outer["y"] + outer["h"] + slack
    )


def open_zoom(page: Any, card: Any) -> Any:
    card.get_by_role("button", name="Enlarge").click()
    zoom = page.get_by_test_id("zoom")
    expect()(zoom).to_be_visible()
    return zoom


def test_the_enlarged_view_fits_zooms_with_the_keyboard_and_keeps_labels_readable(
    signed_in: Page, web_client: WebClient, photos: dict[str, Path], artifacts: Path
) -> None:
    page = signed_in.page
    if signed_in.screen == "desktop":
        page.set_viewport_size({"width": 1280, "height": 900})
    card = upload_and_wait(page, photos["motorcycle_left"])
    zoom = open_zoom(page, card)
    fit = zoom.evaluate(GEOMETRY_JS)
    assert _inside(fit["image"], fit["view"]), fit  # the whole photo, the bottom included
    assert fit["labels"]
    heights = {round(label["h"], 1) for label in fit["labels"]}

    view = zoom.get_by_test_id("zoom-view")
    expect()(view).to_be_focused()
    level = zoom.locator('[data-role="level"]')
    page.keyboard.press("+")
    page.keyboard.press("+")
    expect()(level).to_have_text("200%")
    zoomed = zoom.evaluate(GEOMETRY_JS)
    assert zoomed["image"]["w"] > fit["image"]["w"] * 1.9
    for label in zoomed["labels"]:
        assert any(abs(label["h"] - h) <= 0.5 for h in heights), (label, heights)
        assert _inside(label, zoomed["image"]), label  # not cut at the photo's edges
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    panned = zoom.evaluate(GEOMETRY_JS)
    assert panned["left"] > zoomed["left"], (zoomed, panned)
    assert panned["top"] > zoomed["top"] or not panned["tall"], (zoomed, panned)
    page.keyboard.press("-")
    expect()(level).to_have_text("150%")
    page.keyboard.press("0")
    expect()(level).to_have_text("100%")
    assert _inside(zoom.evaluate(GEOMETRY_JS)["image"], fit["view"])

    if signed_in.screen == "desktop":  # drag to pan: nothing selected, nothing tinted
        page.keyboard.press("+")
        page.keyboard.press("+")
        box = view.bounding_box()
        before = zoom.evaluate(GEOMETRY_JS)
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2 - 120, box["y"] + box["height"] / 2 - 60)
        page.mouse.up()
        after = zoom.evaluate(GEOMETRY_JS)
        assert after["left"] > before["left"], (before, after)
        assert page.evaluate("window.getSelection().toString()") == ""
    shoot(page, artifacts, "viewer", signed_in.screen, web_client.backend)
    page.keyboard.press("Escape")
    expect()(zoom).to_be_hidden()
    assert signed_in.watch.unexpected() == []


# Each box's frame and outline, and whether every frame comes before every label in the SVG.
FRAMES_JS = """card => {
  const overlay = card.querySelector('[data-testid=overlay]');
  const frames = Array.from(overlay.querySelectorAll('g.frame')).map(g => ({
    fill: g.querySelector('.box__frame').getAttribute('stroke'),
    halo: g.querySelector('.box__halo').getAttribute('stroke'),
    haloWidth: parseFloat(getComputedStyle(g.querySelector('.box__halo')).strokeWidth),
    frameWidth: parseFloat(getComputedStyle(g.querySelector('.box__frame')).strokeWidth),
  }));
  const tags = Array.from(overlay.querySelectorAll('.box__tag')).map(t => t.getAttribute('stroke'));
  const last = Array.from(overlay.querySelectorAll('g.frame')).pop();
  const first = overlay.querySelector('g.box');
  const framesUnder = !!(last.compareDocumentPosition(first) & Node.DOCUMENT_POSITION_FOLLOWING);
  const size = parseFloat(getComputedStyle(card.querySelector('.box__text')).fontSize);
  const scale = card.querySelector('[data-role=image]').getBoundingClientRect().width
    / card.querySelector('[data-role=image]').naturalWidth;
  return {frames, tags, framesUnder, textPx: size * scale};
}"""


def test_boxes_and_labels_have_a_contrasting_outline_and_smaller_labels_on_a_small_image(
    signed_in: Page, photos: dict[str, Path]
) -> None:
    page = signed_in.page
    card = upload_and_wait(page, photos["chelsea"])
    drawn = card.evaluate(FRAMES_JS)
    assert drawn["frames"] and drawn["framesUnder"], "a box's edge would cross a label"
    for frame in drawn["frames"]:
        assert contrast(hex_rgb(frame["fill"]), hex_rgb(frame["halo"])) >= 4.5, frame
        assert frame["haloWidth"] > frame["frameWidth"], frame
    labels = card.evaluate(LABELS_JS)
    assert drawn["tags"] == [label["text"] for label in labels]  # outlined in the text's colour
    if signed_in.screen == "desktop":
        large = drawn["textPx"]
        text = card.locator(".box__text").first
        font_size = text.get_attribute("font-size")
        page.set_viewport_size({"width": 360, "height": 800})
        expect()(text).not_to_have_attribute("font-size", font_size)
        small = card.evaluate(FRAMES_JS)["textPx"]
        assert 8.5 <= small < large - 2, (small, large)


# The text fields of each form the page sends (the request's multipart body is not readable here).
SPY_FORM_JS = """() => {
  const append = FormData.prototype.append;
  window.formFields = [];
  FormData.prototype.append = function (name, value, ...rest) {
    if (typeof value === 'string') window.formFields.push([name, value]);
    return append.call(this, name, value, ...rest);
  };
}"""


def test_the_slider_goes_as_low_as_the_results_scores(
    signed_in: Page, photos: dict[str, Path]
) -> None:
    """With "Keep boxes scored from 0.05" the upload asks the API for lower scores; an API that
    keeps them makes the slider go under 0.30, and one that does not leaves it there."""
    page = signed_in.page
    page.get_by_label("Keep boxes scored from").select_option("0.05")
    page.evaluate(SPY_FORM_JS)
    card = upload_and_wait(page, photos["chelsea"])
    assert ["min_score", "0.05"] in page.evaluate("window.formFields")
    status = page.request.get(f"/app/tasks/{card.get_attribute('data-task-id')}").json()
    result = status["result"]
    lowest = min([result["score_threshold"]] + [d["score"] for d in result["detections"]])
    slider = card.get_by_role("slider")
    assert float(slider.get_attribute("min")) <= lowest < float(slider.get_attribute("min")) + 0.05
    assert float(slider.input_value()) <= lowest
    rows = card.get_by_test_id("detection-row")
    expect()(rows.filter(visible=True)).to_have_count(len(result["detections"]))
    page.reload()  # the choice is not kept: the next upload is cut at the service's threshold
    expect()(page.get_by_label("Keep boxes scored from")).to_have_value("")
