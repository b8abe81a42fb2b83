"""Several files of one upload go as one batch of the API, the whole upload is exported as COCO
JSON and CSV; with two models served the page offers the choice and names each result's model."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from ml_tools.devstack import wait_http
from tests.browser.conftest import Page, WebClient
from tests.browser.pageparts import DETECTION_TIMEOUT_MS, card_for, expect, shoot, upload
from tests.browser.test_web_lists import _serious_violations as serious_violations
from tests.conftest import DEFAULT_STACK, LiveStack
from tests.integration.test_model_routing import two_model_stack, wait_models

pytestmark = pytest.mark.browser


@DEFAULT_STACK
def test_three_files_go_as_one_batch_and_export_as_coco(
    signed_in: Page, photos: dict[str, Path], astronaut_file: Path, artifacts: Path,
    web_client: WebClient, browser: Any,
) -> None:  # fmt: skip
    page = signed_in.page
    files = [photos["chelsea"], photos["motorcycle_left"], astronaut_file]
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    with page.expect_response(lambda r: r.url.endswith("/app/batches")) as sent:
        upload(page, *files)
    assert sent.value.status == 202
    batch = sent.value.json()
    assert [i["file_name"] for i in batch["items"]] == [f.name for f in files]
    for photo in files:
        card = card_for(page, photo)
        status = card.get_by_test_id("task-status")
        expect()(status).to_have_text("Done", timeout=DETECTION_TIMEOUT_MS)
        assert card.get_attribute("data-task-id") in {i["task_id"] for i in batch["items"]}
    expect()(page.get_by_test_id("upload-summary")).to_have_text("3 of 3 done")
    # one event stream for the batch, none per card
    assert any(u.endswith(f"/app/batches/{batch['batch_id']}/events") for u in requested)
    assert not [u for u in requested if "/app/tasks/" in u and u.endswith("/events")]
    # the API knows the batch: the client's proxy reads it back, finished, for this user only
    found = page.request.get(f"/app/batches/{batch['batch_id']}")
    assert found.ok and found.json()["counts"]["succeeded"] == 3 and found.json()["finished"]
    exports = page.get_by_test_id("batch-exports")
    with page.expect_download() as download:
        exports.get_by_role("link", name="Download all as COCO JSON").click()
    name = download.value.suggested_filename
    assert re.fullmatch(r"detections-\d{4}-\d\d-\d\d-\d{4}-3-images\.coco\.json", name), name
    coco = json.loads(Path(download.value.path()).read_text())
    assert sorted(i["file_name"] for i in coco["images"]) == sorted(f.name for f in files)
    assert coco["annotations"], "the photos have objects in them"
    with page.expect_download() as download:
        exports.get_by_role("link", name="Download all as CSV").click()
    assert download.value.suggested_filename.endswith("-3-images.csv")
    assert "chelsea.png" in Path(download.value.path()).read_text()
    shoot(page, artifacts, "batch", signed_in.screen, web_client.backend)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert signed_in.watch.unexpected() == []
    assert_hidden_from_others(browser, web_client, batch["batch_id"])


def sign_in(browser: Any, url: str, user: str, password: str, **options: Any) -> Any:
    page = browser.new_context(base_url=url, **options).new_page()
    page.goto("/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")
    return page


def assert_hidden_from_others(browser: Any, web_client: WebClient, batch_id: str) -> None:
    """Another web user asks for the batch: the API's per-user owner answers 404."""
    other = sign_in(browser, web_client.url, web_client.other_user, web_client.password)
    try:
        for path in (f"/app/batches/{batch_id}", f"/app/batches/{batch_id}/export?format=coco"):
            answer = other.request.get(path)
            assert answer.status == 404, answer.text()
            assert answer.json()["code"] == "batch_not_found"
    finally:
        other.context.close()


@pytest.fixture(scope="module")
def two_model_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebClient]:
    """NanoDet-g and YOLOX-Nano served side by side (YOLOX the default), and a web client."""
    base = tmp_path_factory.mktemp("web-two-models")
    password, user = secrets.token_urlsafe(16), f"models-{secrets.token_hex(3)}"
    with two_model_stack(base) as live:
        wait_models(live, {"nanodet-g-416": {"1+"}, "yolox-nano": {"1+"}})
        _start_client(live, base, f"{user}:{PasswordHasher().hash(password)}")
        yield WebClient(live.stack.client_url, user, password, live.backend)


def _start_client(live: LiveStack, base: Path, users: str) -> None:
    live.stack.start_client(
        live.api_key,
        {
            "ML_CLIENT_USERS": users,
            "ML_STORAGE_DIR": str(base / "client-storage"),
            "ML_SECRET_KEY": secrets.token_urlsafe(32),
        },
    )
    wait_http(f"{live.stack.client_url}/healthz", 60, live.stack.procs["client"])


def test_the_model_choice_is_offered_and_each_card_names_its_model(
    two_model_client: WebClient, browser: Any, photos: dict[str, Path], axe_script: Path
) -> None:
    client = two_model_client
    # the axe check injects axe-core inline, which the page's own CSP rightly forbids
    page = sign_in(browser, client.url, client.user, client.password, bypass_csp=True)
    try:
        select = page.get_by_label("Model", exact=True)
        expect()(select).to_have_value("yolox-nano")  # the API's default, listed first
        options = select.locator("option").all_inner_texts()
        assert options == [
            "yolox-nano (default)",
            "nanodet-g-416",
            "Compare models (each photo to every model)",
        ]
        for model, photo in (("nanodet-g-416", "motorcycle_left"), ("yolox-nano", "chelsea")):
            select.select_option(model)
            upload(page, photos[photo])
            card = card_for(page, photos[photo])
            status = card.get_by_test_id("task-status")
            expect()(status).to_have_text("Done", timeout=DETECTION_TIMEOUT_MS)
            expect()(card.get_by_test_id("caption")).to_contain_text(f"{model} ")
        select.select_option("nanodet-g-416")
        page.reload()  # the choice is kept in the browser
        expect()(page.get_by_label("Model", exact=True)).to_have_value("nanodet-g-416")
        assert serious_violations(page, axe_script) == []
        _compare(page, photos["chelsea"])
        assert serious_violations(page, axe_script) == []
    finally:
        page.context.close()


@DEFAULT_STACK
def test_photos_past_the_body_limit_go_in_parts_the_client_takes(
    signed_in: Page, tmp_path: Path, web_client: WebClient
) -> None:
    """Three photos of 3.6 MB (10.9 MB, past the 10 MiB a request): sent in parts, none 413"""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(24)
    files = []
    for i in range(3):  # noise does not compress: each PNG is as large as its pixels
        path = tmp_path / f"noise-{i}.png"
        Image.fromarray(rng.integers(0, 255, (1100, 1100, 3), dtype=np.uint8)).save(path)
        files.append(path)
    limit = int(signed_in.page.get_by_test_id("dropzone").get_attribute("data-max-bytes") or 0)
    assert (
        sum(f.stat().st_size for f in files)
        > limit + 64 * 1024
        >= max(f.stat().st_size for f in files)
    )
    page = signed_in.page
    answers: list[int] = []
    page.on(
        "response", lambda r: answers.append(r.status) if r.url.endswith("/app/batches") else None
    )
    upload(page, *files)
    for photo in files:
        status = card_for(page, photo).get_by_test_id("task-status")
        expect()(status).to_have_text("Done", timeout=DETECTION_TIMEOUT_MS)
    assert answers == [202, 202], answers
    assert signed_in.watch.unexpected() == []


def _compare(page: Any, photo: Path) -> None:
    """With "Compare models" the photo goes to each model, the results side by side on a desktop,
    each card with its own slider, class toggles and table."""
    choice = "Compare models (each photo to every model)"
    page.get_by_label("Model", exact=True).select_option(label=choice)
    upload(page, photo)
    cards = page.locator(".card--compare").filter(has_text=photo.name)
    expect()(cards).to_have_count(2)
    assert [c.get_attribute("data-model") for c in cards.all()] == ["yolox-nano", "nanodet-g-416"]
    for card in cards.all():
        model = card.get_attribute("data-model")
        status = card.get_by_test_id("task-status")
        expect()(status).to_have_text("Done", timeout=DETECTION_TIMEOUT_MS)
        expect()(card.get_by_test_id("caption")).to_contain_text(f"{model} ")
        expect()(card.get_by_role("slider")).to_be_visible()
        expect()(card.get_by_test_id("detections-table")).to_be_visible()
    left, right = (c.bounding_box() for c in cards.all())
    assert left["x"] + left["width"] <= right["x"] and abs(left["y"] - right["y"]) < 1
    page.reload()  # the history keeps them together: still side by side, each naming its model
    cards = page.locator(".card--compare").filter(has_text=photo.name)
    expect()(cards).to_have_count(2)
    models = {c.get_attribute("data-model") for c in cards.all()}
    assert models == {"yolox-nano", "nanodet-g-416"}
    left, right = sorted((c.bounding_box() for c in cards.all()), key=lambda b: b["x"])
    assert left["x"] + left["width"] <= right["x"] and abs(left["y"] - right["y"]) < 1
