"""The page's details a new user tripped over (issue 25, item 8): the keyboard opens the picker,
a bad file is worded the same alone and in a batch, the batch summary says what the cards show,
batch exports outlive a reload, the task id shows whole, portraits fit the screen, the compact
list has thumbnails and opens one card, sizes are in MiB."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tests.browser.conftest import Page
from tests.browser.pageparts import (
    DETECTION_TIMEOUT_MS,
    card_for,
    expect,
    upload,
    upload_and_wait,
)
from tests.conftest import DEFAULT_STACK

pytestmark = [pytest.mark.browser, DEFAULT_STACK]


ENTER_TRIES = 3


# In whole suites (never alone) an Enter now and then opened no picker, on either screen (3 of
# about 10 suites; the cause is not found). A user presses again: so does the test, up to
# ENTER_TRIES times; a page on which Enter does nothing fails all of them.
@pytest.mark.parametrize("screen", ["desktop"], indirect=True)
def test_enter_on_the_focused_file_input_opens_the_picker(
    signed_in: Page, photos: dict[str, Path]
) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = signed_in.page
    page.wait_for_selector("html[data-ready]", state="attached")
    picker = page.get_by_label("Choose images…")
    for _ in range(ENTER_TRIES):
        page.bring_to_front()  # the browser's active tab, whatever earlier tests left open
        picker.focus()
        expect()(picker).to_be_focused()  # Enter goes where the focus is once it is there
        try:
            with page.expect_file_chooser(timeout=10_000) as chooser:
                page.keyboard.press("Enter")
            break
        except PlaywrightTimeout:
            continue
    else:
        raise AssertionError(
            f"Enter on the focused file input opened no picker in {ENTER_TRIES} tries"
        )
    chooser.value.set_files(str(photos["chelsea"]))
    status = card_for(page, photos["chelsea"]).get_by_test_id("task-status")
    expect()(status).to_have_text("Done", timeout=DETECTION_TIMEOUT_MS)


def test_a_bad_file_is_worded_the_same_alone_and_in_a_batch(
    signed_in: Page, photos: dict[str, Path], tmp_path: Path
) -> None:
    page = signed_in.page
    fake = tmp_path / "notes.png"
    fake.write_bytes(b"this is text, not a PNG")
    upload(page, fake)
    alone = card_for(page, fake)
    expect()(alone.get_by_test_id("task-status")).to_have_text("Not sent")
    expect()(alone.get_by_test_id("task-error")).to_be_visible()
    wording = alone.get_by_test_id("task-error").text_content()
    assert re.match(r"Not (a usable image|an image): ", wording), wording

    with page.expect_response(lambda r: r.url.endswith("/app/batches")) as sent:
        upload(page, photos["chelsea"], fake)
    assert sent.value.status == 202  # the API takes the batch and refuses the one file
    in_batch = card_for(page, fake)  # the newest card of that name: the batch's
    expect()(in_batch).to_have_attribute("data-task-id", sent.value.json()["items"][1]["task_id"])
    expect()(in_batch.get_by_test_id("task-status")).to_have_text(
        "Not sent", timeout=DETECTION_TIMEOUT_MS
    )
    expect()(in_batch.get_by_test_id("task-error")).to_have_text(wording)
    expect()(page.get_by_test_id("upload-summary")).to_have_text(
        "1 of 2 done, 1 not sent", timeout=DETECTION_TIMEOUT_MS
    )
    assert "Detection failed" not in in_batch.text_content()
    assert signed_in.watch.unexpected(415, 422) == []  # the file alone: the API's answer


# Each time the summary changes: its count of done and the cards' own "Done" badges.
WATCH_SUMMARY_JS = """n => {
  window.summaryChecks = [];
  const summary = document.getElementById('upload-summary');
  new MutationObserver(() => {
    const cards = Array.from(document.querySelectorAll('#cards > li')).slice(0, n);
    const badge = c => c.querySelector('[data-testid=task-status]').textContent;
    const done = cards.filter(c => badge(c) === 'Done');
    window.summaryChecks.push([summary.textContent, done.length]);
  }).observe(summary, {childList: true, characterData: true, subtree: true});
}"""


def test_the_batch_summary_says_what_the_cards_show_and_exports_outlive_a_reload(
    signed_in: Page, photos: dict[str, Path], astronaut_file: Path
) -> None:
    """The list of earlier detections is held back until the batch is sent: the page must not
    show its tasks twice (a second card that stays Queued), and the summary counts the cards."""
    page = signed_in.page
    files = [photos["chelsea"], photos["motorcycle_left"], astronaut_file]
    held: list[Any] = []

    def history(url: str) -> bool:
        return urlsplit(url).path == "/app/tasks"

    page.route(history, lambda route: held.append(route))
    page.reload()
    page.wait_for_selector("html[data-ready]", state="attached")
    page.evaluate(WATCH_SUMMARY_JS, len(files))
    with page.expect_response(lambda r: r.url.endswith("/app/batches")) as sent:
        upload(page, *files)
    batch = sent.value.json()
    assert len(held) == 1
    held[0].continue_()
    page.unroute(history)
    expect()(page.get_by_test_id("upload-summary")).to_have_text(
        "3 of 3 done", timeout=DETECTION_TIMEOUT_MS
    )
    for item in batch["items"]:
        expect()(page.locator(f'[data-task-id="{item["task_id"]}"]')).to_have_count(1)
    for text, done in page.evaluate("window.summaryChecks"):
        assert text.startswith(f"{done} of 3 done"), (text, done)

    page.reload()
    exports = page.get_by_test_id("batch-exports")
    with page.expect_download() as download:
        exports.get_by_role("link", name="Download all as COCO JSON").click()
    assert download.value.suggested_filename.endswith("-3-images.coco.json")
    card = page.locator(f'[data-task-id="{batch["items"][0]["task_id"]}"]')
    expect()(card.get_by_test_id("task-status")).to_have_text("Done")
    link = card.get_by_role("link", name="Download its batch as CSV")
    with page.expect_download() as download:
        link.click()
    assert "chelsea.png" in Path(download.value.path()).read_text()
    assert signed_in.watch.unexpected() == []


def test_the_task_id_shows_whole_and_a_portrait_photo_fits_the_screen(
    signed_in: Page, tmp_path: Path, astronaut_file: Path
) -> None:
    page = signed_in.page
    portrait = tmp_path / "portrait.png"
    with Image.open(astronaut_file) as img:
        img.crop((100, 0, 340, 512)).resize((480, 1024)).save(portrait)
    card = upload_and_wait(page, portrait)
    field = card.get_by_label("Task id")
    assert field.input_value() == card.get_attribute("data-task-id")
    assert field.evaluate("f => f.scrollWidth <= f.clientWidth && f.scrollHeight <= f.clientHeight")
    height = page.viewport_size["height"]
    image = card.locator('[data-role="image"]').bounding_box()
    overlay = card.get_by_test_id("overlay").bounding_box()
    assert image["height"] <= height, (image, height)
    for key in ("x", "y", "width", "height"):
        assert abs(image[key] - overlay[key]) <= 1, (key, image, overlay)


def test_the_compact_list_has_thumbnails_and_opens_one_card(
    signed_in: Page, photos: dict[str, Path]
) -> None:
    page = signed_in.page
    first = upload_and_wait(page, photos["chelsea"])
    second = upload_and_wait(page, photos["motorcycle_left"])
    toggle = page.get_by_role("button", name="Compact list")
    toggle.click()
    try:
        for card in (first, second):
            thumb = card.get_by_test_id("thumbnail")
            expect()(thumb).to_be_visible()
            loaded = "t => t.complete && t.naturalWidth > 0"  # loaded once shown (lazy)
            page.wait_for_function(loaded, arg=thumb.element_handle())
            expect()(card.get_by_test_id("detections-table")).to_be_hidden()
        opener = first.get_by_role("button", name="Show result")
        opener.click()
        expect()(first.get_by_test_id("detections-table")).to_be_visible()
        expect()(first.get_by_role("button", name="Hide result")).to_have_attribute(
            "aria-expanded", "true"
        )
        expect()(second.get_by_test_id("detections-table")).to_be_hidden()
        second.get_by_test_id("thumbnail").click()
        expect()(second.get_by_test_id("detections-table")).to_be_visible()
    finally:
        toggle.click()  # the choice is kept in the browser: the next test starts expanded
        expect()(toggle).to_have_attribute("aria-pressed", "false")


def test_sizes_are_in_mib(signed_in: Page, tmp_path: Path) -> None:
    page = signed_in.page
    expect()(page.get_by_text("up to 10.0 MiB each")).to_be_visible()
    big = tmp_path / "big.gif"  # a GIF is never shrunk here: refused before it is sent
    big.write_bytes(b"GIF89a" + bytes(11 * 1024 * 1024))
    upload(page, big)
    error = card_for(page, big).get_by_test_id("task-error")
    expect()(error).to_have_text("“big.gif” is 11.0 MiB; the limit is 10.0 MiB.")
