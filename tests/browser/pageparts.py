"""What the page tests share: uploading and waiting, reading the boxes, screenshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml_common.palette import contrast, hex_rgb

DETECTION_TIMEOUT_MS = 120_000

# Every box's label tag as drawn: on-screen rectangle, colours, score; in document order.
LABELS_JS = """card => Array.from(card.querySelectorAll('g.box')).map(g => {
  const tag = g.querySelector('.box__tag');
  const r = tag.getBoundingClientRect();
  return {score: Number(g.dataset.score), label: g.dataset.label, x: r.x, y: r.y, w: r.width,
          h: r.height, fill: tag.getAttribute('fill'),
          text: g.querySelector('text').getAttribute('fill')};
})"""


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def upload(page: Any, *files: Path) -> None:
    page.wait_for_selector("html[data-ready]", state="attached")
    page.get_by_label("Choose images…").set_input_files([str(f) for f in files])


def card_for(page: Any, photo: Path) -> Any:
    return page.get_by_test_id("task-card").filter(has_text=photo.name).first


def upload_and_wait(page: Any, photo: Path) -> Any:
    """Upload through the file picker; returns the card once its result is shown."""
    upload(page, photo)
    card = card_for(page, photo)
    status = card.get_by_test_id("task-status")
    expect()(status).to_have_text("Done", timeout=DETECTION_TIMEOUT_MS)
    return card


def shoot(
    page: Any, artifacts: Path, name: str, screen: str, backend: str, full_page: bool = True
) -> None:
    page.screenshot(path=artifacts / f"web-{name}-{screen}-{backend}.png", full_page=full_page)


def label_contrast(label: dict[str, Any]) -> float:
    return contrast(hex_rgb(label["fill"]), hex_rgb(label["text"]))


def overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    slack = 0.5  # sub-pixel rounding of touching labels
    return (
        a["x"] + slack < b["x"] + b["w"]
        and b["x"] + slack < a["x"] + a["w"]
        and a["y"] + slack < b["y"] + b["h"]
        and b["y"] + slack < a["y"] + a["h"]
    )
