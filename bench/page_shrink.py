"""A 12 MP phone photo through the web page at 10 Mbit/s: bytes sent and time to boxes, with
the page's shrink off (the photo sent whole) and on (its default long side).

Starts its own stack (API, one worker, web client, on an embedded Valkey: no shared service is
touched) and Debian's Chromium through Playwright, throttled with the DevTools protocol's
`Network.emulateNetworkConditions`. The photo is made as bench/photos.py makes its 12 MP ones
(a COCO photo with people, upscaled with a sensor's noise), stored with EXIF orientation 6 as a
phone held upright does. Time to boxes runs from choosing the file to its card showing "Done"
(its boxes are drawn then); bytes sent are the image the server received (the web client
keeps it). Each setting runs `--runs` times; medians and the load average at start and end go to
bench/results/page-shrink-*.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import photos  # noqa: E402
import runinfo  # noqa: E402
from argon2 import PasswordHasher  # noqa: E402

from ml_common.apikeys import ApiKeyStore  # noqa: E402
from ml_common.settings import Settings  # noqa: E402
from ml_tools.devstack import Stack, wait_http  # noqa: E402

logger = logging.getLogger("bench.page_shrink")
CHROMIUM = "/usr/bin/chromium"
USER = "bench"
MBIT = 1_000_000 / 8  # bytes per second


@contextmanager
def stack(tmp: Path, model: str) -> Iterator[tuple[Stack, str]]:
    """API and worker on an embedded Valkey; yields the stack and an API key."""
    env = {
        "ML_ENVIRONMENT": "development",
        "ML_STORAGE_DIR": str(tmp / "storage"),
        "ML_MODEL_DIR": str(ROOT / "ml-storages" / "models" / model),
        "ML_LOG_LEVEL": "WARNING",
    }
    running = Stack(env, tmp / "logs")
    running.start_embedded_backend()
    fields = {k.removeprefix("ML_").lower(): v for k, v in running.env.items()}
    settings = Settings(_env_file=None, **fields)  # type: ignore[call-arg]
    api_key, _ = ApiKeyStore.from_settings(settings).create("bench", delegates=True)
    try:
        running.start_worker()
        running.start_api()
        running.wait_ready()
        yield running, api_key
    finally:
        running.stop()


def start_client(running: Stack, api_key: str, password: str, max_side: int) -> None:
    running.stop_process("client")
    running.start_client(api_key, {
        "ML_CLIENT_USERS": f"{USER}:{PasswordHasher().hash(password)}",
        "ML_SECRET_KEY": secrets.token_urlsafe(32),
        "ML_CLIENT_SHRINK_MAX_SIDE": str(max_side),
    })  # fmt: skip
    wait_http(f"{running.client_url}/healthz", 60, running.procs["client"])


def _is_upload(request: Any) -> bool:
    return request.method == "POST" and request.url.endswith("/app/uploads")


def one_upload(browser: Any, url: str, password: str, photo: Path, mbit: float) -> dict[str, Any]:
    """Sign in, throttle, upload `photo`, wait for its boxes: seconds and bytes received."""
    context = browser.new_context(base_url=url, viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.on("console", lambda m: logger.warning("page: %s", m.text) if m.type == "error" else None)
    page.goto("/login")
    page.get_by_label("User name").fill(USER)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("html[data-ready]", state="attached")
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 20,
        "downloadThroughput": mbit * MBIT, "uploadThroughput": mbit * MBIT,
    })  # fmt: skip
    sent_at: list[float] = []  # when the upload request left: the shrink is done by then
    page.on("request", lambda r: sent_at.append(time.perf_counter()) if _is_upload(r) else None)
    started = time.perf_counter()
    with page.expect_response(lambda r: _is_upload(r.request), timeout=120_000) as answer:
        page.get_by_label("Choose images…").set_input_files(str(photo))
    card = page.get_by_test_id("task-card").filter(has_text=photo.name).first
    card.get_by_test_id("task-status").filter(has_text="Done").wait_for(timeout=300_000)
    seconds = time.perf_counter() - started
    task_id = answer.value.json()["task_id"]
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1,
    })  # fmt: skip
    received = len(page.request.get(f"/app/tasks/{task_id}/original").body())
    result = page.request.get(f"/app/tasks/{task_id}").json()["result"]
    context.close()
    sizes = [result["width"], result["height"], result["processed_width"]]
    boxes = len(result["detections"])  # drawn by the time the card says Done
    before_send = round(sent_at[0] - started, 3)
    return {"seconds": round(seconds, 3), "before_send_s": before_send, "bytes_sent": received,
            "sizes": sizes, "boxes": boxes}  # fmt: skip


def phone_photo() -> bytes:
    """bench/photos.py's second 12 MP photo (people in it), as a phone held upright stores it."""
    source = list(photos.sources(2))[1]
    big = photos.upscale(source, photos.SIZES["12mp"], seed=1)
    return photos.jpeg(photos.upright_for_orientation_6(big), orientation=6)


def measure(args: argparse.Namespace, photo: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    password = secrets.token_urlsafe(12)
    report: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        stack(Path(tmp), args.model) as (running, key),
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless"])
        for max_side in (0, args.max_side):
            start_client(running, key, password, max_side)
            one_upload(browser, running.client_url, password, photo, 1000)  # warm-up
            runs = [one_upload(browser, running.client_url, password, photo, args.mbit)
                    for _ in range(args.runs)]  # fmt: skip
            name = f"shrink to {max_side}" if max_side else "sent whole"
            report[name] = {
                "median_seconds": statistics.median(r["seconds"] for r in runs),
                "median_before_send_s": statistics.median(r["before_send_s"] for r in runs),
                "bytes_sent": runs[0]["bytes_sent"],
                "runs": runs,
            }
            logger.info("%s: %s", name, report[name])
        browser.close()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mbit", type=float, default=10.0, help="up and down, Mbit/s")
    parser.add_argument("--max-side", type=int, default=1280, help="the page's shrink size")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="yolox-nano")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    run = runinfo.start()
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "phone-12mp.jpg"
        photo.write_bytes(phone_photo())
        report: dict[str, Any] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "photo_bytes": photo.stat().st_size,
            "mbit_per_s": args.mbit,
        }
        report |= measure(args, photo)
    report["run"] = runinfo.finish(run)
    logger.info("%s", runinfo.banner(report["run"]))
    out = ROOT / "bench" / "results" / f"page-shrink-{report['date'].replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
