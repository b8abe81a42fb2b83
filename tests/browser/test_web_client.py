"""The web client in Chromium: sign in, upload, live results, threshold, history, sign out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Watch

pytestmark = pytest.mark.browser

DETECTION_TIMEOUT_MS = 120_000


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _upload_and_wait(page: Any, photo: Path) -> Any:
    """Upload through the file picker; returns the card once its result is shown."""
    expect = _expect()
    page.wait_for_selector("html[data-ready]", state="attached")
    page.get_by_label("Choose images…").set_input_files(str(photo))
    card = page.get_by_test_id("task-card").filter(has_text=photo.name).first
    expect(card.get_by_test_id("task-status")).to_have_text("Done", timeout=DETECTION_TIMEOUT_MS)
    return card


def test_sign_in_upload_filter_reload_and_sign_out(
    browser: Any, web_client: Any, live_stack: Any, astronaut_file: Path, artifacts: Path
) -> None:
    expect = _expect()
    context = browser.new_context(base_url=web_client.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watch = Watch.on(page)

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_label("User name").fill(web_client.user)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong user name or password")
    expect(page).to_have_url(re.compile(r"/login$"))

    page.get_by_label("Password").fill(web_client.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Detect objects in your images")).to_be_visible()

    card = _upload_and_wait(page, astronaut_file)
    people = card.locator('[data-testid="detection-box"][data-label="person"]')
    expect(people.first).to_be_visible()
    expect(card.get_by_role("row").filter(has_text="person").first).to_be_visible()
    expect(card.get_by_role("link", name="Annotated image")).to_have_attribute(
        "href", re.compile(r"^/app/tasks/[0-9a-f-]{36}/image$")
    )
    boxes = card.get_by_test_id("detection-box")
    total = boxes.count()
    assert total >= 1

    slider = card.get_by_role("slider", name="Minimum score")
    # it starts at the threshold the worker reports having applied
    expect(slider).to_have_value(str(live_stack.settings.score_threshold))
    slider.focus()
    slider.press("End")  # 1.0: no score reaches it
    expect(boxes.filter(visible=True)).to_have_count(0)
    expect(card.get_by_test_id("detection-row").filter(visible=True)).to_have_count(0)
    expect(card).to_contain_text(f"Showing 0 of {total} objects")
    slider.press("Home")  # 0.0: everything again
    expect(boxes.filter(visible=True)).to_have_count(total)
    expect(card).to_contain_text(f"Showing {total} of {total} objects")
    page.screenshot(path=artifacts / f"web-client-result-{web_client.backend}.png", full_page=True)

    task_id = card.get_attribute("data-task-id")
    page.reload()
    history = page.get_by_test_id("history")
    again = history.locator(f'[data-task-id="{task_id}"]')
    expect(again.get_by_role("heading", name=astronaut_file.name)).to_be_visible()
    expect(again.get_by_test_id("task-status")).to_have_text("Done")
    expect(
        again.locator('[data-testid="detection-box"][data-label="person"]').first
    ).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You have signed out")).to_be_visible()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))
    response = page.request.get("/app/tasks")
    assert response.status == 401
    # the 401 of the wrong password is the only error: no CSP violation, no failed script
    assert watch.unexpected(401) == []
    context.close()


def test_a_file_that_is_not_an_image_is_explained_on_its_card(
    browser: Any, web_client: Any, signed_in_state: Path, tmp_path: Path
) -> None:
    expect = _expect()
    context = browser.new_context(base_url=web_client.url, storage_state=signed_in_state)
    page = context.new_page()
    page.goto("/")
    fake = tmp_path / "holiday.png"
    fake.write_bytes(b"this is text, not a PNG")
    page.wait_for_selector("html[data-ready]", state="attached")
    page.get_by_label("Choose images…").set_input_files(str(fake))
    card = page.get_by_test_id("task-card").filter(has_text="holiday.png").first
    expect(card.get_by_test_id("task-error")).to_contain_text("Not an image", timeout=30_000)
    expect(card.get_by_test_id("task-status")).to_have_text("Not sent")
    context.close()


def test_phone_layout_shows_the_result_without_sideways_scrolling(
    browser: Any, web_client: Any, signed_in_state: Path, astronaut_file: Path, artifacts: Path
) -> None:
    expect = _expect()
    context = browser.new_context(
        base_url=web_client.url,
        storage_state=signed_in_state,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page = context.new_page()
    page.goto("/")
    card = _upload_and_wait(page, astronaut_file)
    expect(card.get_by_test_id("detection-box").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=artifacts / f"web-client-phone-{web_client.backend}.png", full_page=True)
    context.close()
