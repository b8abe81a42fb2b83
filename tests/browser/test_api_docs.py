"""/api/docs (Swagger UI) on the live stack: "Try it out" on each upload shows a file picker,
leaves the optional fields empty (not "string"), and its request is accepted (202)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEFAULT_STACK, LiveStack, storage_independent

pytestmark = [
    storage_independent("the API docs page"),
    pytest.mark.browser,
    DEFAULT_STACK,
]


def authorize(page: Any, api_key: str) -> None:
    page.get_by_role("button", name="Authorize").click()
    page.locator(".dialog-ux input[type=text]").fill(api_key)
    page.locator(".dialog-ux button.modal-btn.auth.authorize").click()
    page.locator(".dialog-ux button.btn-done").click()


@pytest.mark.parametrize("operation", ["detections-create_detection", "batches-create_batch"])
def test_try_it_out_uploads_a_photo(
    browser: Any, live_stack: LiveStack, astronaut_file: Path, operation: str
) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{live_stack.api_url}/api/docs")
        authorize(page, live_stack.api_key)
        block = page.locator(f"#operations-{operation}")
        block.locator(".opblock-summary").click()
        block.get_by_role("button", name="Try it out").click()
        fields = block.locator(".body-param input[type=text], .parameters input[type=text]")
        values = {f.get_attribute("placeholder"): f.input_value() for f in fields.all()}
        assert "callback_url" in values and set(values.values()) == {""}, values
        block.locator("input[type=file]").set_input_files(astronaut_file)
        block.get_by_role("button", name="Execute").click()
        status = block.locator(".live-responses-table .response .response-col_status")
        status.wait_for()
        assert status.inner_text().strip() == "202", block.locator(
            ".live-responses-table"
        ).inner_text()
    finally:
        page.close()
