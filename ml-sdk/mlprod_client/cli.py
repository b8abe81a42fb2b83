"""`mlprod detect PATH...`: a folder through the batch API, with progress, resumable.

A single image goes in one request that answers once it is done (`Prefer: wait`). The
manifest in the output folder records each chunk of files and its Idempotency-Key before the
chunk is sent, so a run killed at any point and run again never submits an image twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from mlprod_client.client import FINAL, ApiError, BatchProgress, Client
from mlprod_client.cocogt import GroundTruth, GroundTruthError
from mlprod_client.files import find_images, missing_paths
from mlprod_client.outputs import FORMATS, write_results
from mlprod_client.report import Outcome, failed_items, report, single_outcome

MANIFEST = "mlprod-manifest.json"
CHUNK = 200  # files per batch request
CONFIG = Path("~/.config/mlprod/config.json").expanduser()
DEFAULT_API = "http://localhost:8000"
RESUME = "run the same command again to resume"
# what the API answers about the file itself (its bytes), not about the request
FILE_ERRORS = frozenset({
    "invalid_image", "image_too_large", "extreme_aspect_ratio", "unsupported_media_type",
    "payload_too_large",
})  # fmt: skip


class UsageError(Exception):
    """A command line that cannot run as given (exit 2)."""


def settings(args: argparse.Namespace) -> tuple[str, str]:
    """The API's URL and key: flags, then MLPROD_API_URL/MLPROD_API_KEY, then the config file."""
    config: dict[str, str] = json.loads(CONFIG.read_text()) if CONFIG.is_file() else {}
    url = args.api or os.environ.get("MLPROD_API_URL") or config.get("api_url", DEFAULT_API)
    key = os.environ.get("MLPROD_API_KEY") or config.get("api_key", "")
    if not key:
        raise UsageError(f"set MLPROD_API_KEY, or api_key in {CONFIG}")
    return url, key


class Manifest:
    """Chunks of file names, each with its Idempotency-Key and, once known, its batch id; and
    the options the chunks were sent with (a chunk's key may not go again with others)."""

    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        self.path = path
        data = json.loads(path.read_text()) if path.is_file() else {"chunks": []}
        self.chunks: list[dict[str, Any]] = data["chunks"]
        earlier = data.get("options", options)
        if self.chunks and earlier != options:
            raise UsageError(
                f"{path.parent} holds a run with other options ({_options(earlier)}): "
                "run it with those, or choose another --out"
            )
        self.options = options

    def plan(self, names: Sequence[str], chunk: int = CHUNK) -> None:
        """Add chunks for the names no chunk holds yet (kept in the manifest before sending)."""
        known = {n for chunk in self.chunks for n in chunk["files"]}
        new = [n for n in names if n not in known]
        for start in range(0, len(new), chunk):
            self.chunks.append(
                {"key": str(uuid.uuid4()), "files": new[start : start + chunk], "batch_id": None}
            )
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"options": self.options, "chunks": self.chunks}, indent=1))
        tmp.replace(self.path)  # a kill mid-write leaves the previous manifest whole

    @property
    def started(self) -> bool:
        return any(chunk["batch_id"] for chunk in self.chunks)


def _options(options: dict[str, Any]) -> str:
    return ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items() if v) or "none"


MAX_RATE_WAITS = 10  # 429s in a row on one chunk before giving up


def submit(
    api: Client, manifest: Manifest, images: dict[str, Path], model: str | None,
    max_side: int | None = None, min_score: float | None = None,
) -> None:  # fmt: skip
    """Send each chunk not yet sent; past the key's per-minute limit (each file counts), wait as
    long as the API says and send it again (its idempotency key makes that safe)."""
    for chunk in manifest.chunks:
        if chunk["batch_id"] is None:
            named = [(name, images[name]) for name in chunk["files"] if name in images]
            for attempt in range(MAX_RATE_WAITS + 1):
                try:
                    batch_id = api.create_batch(
                        named, model=model, idempotency_key=chunk["key"], max_side=max_side,
                        min_score=min_score,
                    )  # fmt: skip
                    break
                except ApiError as exc:
                    if exc.status != 429 or attempt == MAX_RATE_WAITS:
                        raise
                    time.sleep(min(max(exc.retry_after_s, 1.0), 60.0))
            chunk["batch_id"] = batch_id
            manifest.save()


def follow(api: Client, batch_ids: Sequence[str], total: int) -> list[BatchProgress]:
    """Wait for every batch with a live progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("detecting", total=total)
        while True:
            states = [api.batch(batch_id, limit=1) for batch_id in batch_ids]
            bar.update(task, completed=sum(s.done for s in states))
            if all(s.finished for s in states):
                return states
            time.sleep(1.0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlprod detect", description=__doc__)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="images or folders")
    p.add_argument("--api", help=f"the API's URL (default: MLPROD_API_URL or {DEFAULT_API})")
    p.add_argument("--model", help="a served model (default: the deployment's default)")
    p.add_argument(
        "--format", choices=FORMATS,
        help="jsonl (default), csv, coco, labelstudio (tasks with predictions), yolo (a txt "
        "file per image) or voc (Pascal VOC XML per image)",
    )  # fmt: skip
    p.add_argument(
        "--coco-gt", type=Path, metavar="ANNOTATIONS",
        help="a COCO annotations file: write results.coco.json as the results list that "
        "pycocotools' COCO.loadRes reads, in its image ids (by file name) and category ids",
    )  # fmt: skip
    p.add_argument(
        "--min-score", type=float, metavar="S",
        help="keep detections scored from S (at least the API's ML_MIN_SCORE_FLOOR, 0.05 by "
        "default); default: the API's threshold, 0.3. COCO AP is measured from 0.05",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("mlprod-results"), help="output folder")
    p.add_argument("--annotated", action="store_true", help="also the annotated images")
    p.add_argument("--chunk", type=int, default=CHUNK, help="files per batch request")
    p.add_argument(
        "--max-side", type=int, metavar="N",
        help="shrink photos whose long side is over N pixels before sending (e.g. 1280; "
        "needs Pillow); boxes stay in each photo's own pixels",
    )  # fmt: skip
    return p


def _format(args: argparse.Namespace) -> str:
    if args.coco_gt is None:
        return str(args.format or "jsonl")
    if args.format not in (None, "coco"):
        raise UsageError(f"--coco-gt writes COCO results: it cannot go with --format {args.format}")
    return "coco"


def detect_one(
    api: Client, chunk: dict[str, Any], image: Path, args: argparse.Namespace
) -> tuple[Outcome, list[bytes]]:
    """One image in one request (its retry, with the chunk's key, gets the same task); a file
    the API refuses fails alone, as in a batch (no results to write then)."""
    [name] = chunk["files"]
    try:
        status = api.detect_wait(
            image, name=name, model=args.model, idempotency_key=chunk["key"],
            max_side=args.max_side, min_score=args.min_score,
        )  # fmt: skip
    except ApiError as exc:
        if exc.code not in FILE_ERRORS:
            raise
        return Outcome({"failed": 1}, [(name, f"{exc.code}: {exc.detail}")]), []
    if status["status"] not in FINAL:
        raise ApiError(504, "not_finished", f"task {status['task_id']} is {status['status']}")
    if args.annotated and status["status"] == "succeeded":
        annotated = args.out / "annotated" / Path(name).with_suffix(".jpg").name
        annotated.parent.mkdir(exist_ok=True)
        annotated.write_bytes(api.annotated(status["task_id"]))
    return single_outcome(name, status), [api.task_export(status["task_id"], args.fmt)]


def detect_many(
    api: Client, manifest: Manifest, images: dict[str, Path], args: argparse.Namespace
) -> tuple[Outcome, list[bytes]]:
    submit(api, manifest, images, args.model, args.max_side, args.min_score)
    batch_ids = [c["batch_id"] for c in manifest.chunks]
    states = follow(api, batch_ids, sum(len(c["files"]) for c in manifest.chunks))
    if args.annotated:
        for batch_id in batch_ids:
            write_results("zip", [api.export(batch_id, "zip")], args.out)
    outcome = Outcome.of(states, failed_items(api, states))
    return outcome, [api.export(batch_id, args.fmt) for batch_id in batch_ids]


def run(args: argparse.Namespace) -> int:
    missing = missing_paths([*args.paths, *([args.coco_gt] if args.coco_gt else [])])
    for path in missing:
        sys.stderr.write(f"{path}: no such file or directory\n")
    if missing:
        return 2
    args.fmt = _format(args)
    truth = GroundTruth.load(args.coco_gt) if args.coco_gt else None
    url, key = settings(args)
    found = find_images(args.paths)
    if not found.images:
        report(Outcome(), found.skipped, None)
        where = ", ".join(str(p) for p in args.paths)
        sys.stderr.write(f"nothing to send: no image in {where}\n")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    options = {"model": args.model, "min_score": args.min_score, "max_side": args.max_side}
    manifest = Manifest(args.out / MANIFEST, options)
    manifest.plan(list(found.images), args.chunk)
    single = len(manifest.chunks) == 1 and len(manifest.chunks[0]["files"]) == 1
    try:
        with Client(url, key) as api:
            if single and manifest.chunks[0]["batch_id"] is None:
                [image] = found.images.values()
                outcome, exports = detect_one(api, manifest.chunks[0], image, args)
            else:
                outcome, exports = detect_many(api, manifest, found.images, args)
            written = write_results(args.fmt, exports, args.out, truth) if exports else None
    except httpx.TransportError as exc:
        sys.stderr.write(f"cannot reach {url}: {unreachable(exc)}\n")
        if manifest.started:
            sys.stderr.write(RESUME + "\n")
        return 1
    except ApiError as exc:
        sys.stderr.write(f"error: {exc}\n")
        if exc.status == 429 or exc.status >= 500:  # what may pass: others come back the same
            sys.stderr.write(RESUME + "\n")
        return 1
    if args.annotated and written is not None:
        written.notes.append(f"annotated images: {args.out / 'annotated'}")
    return report(outcome, found.skipped, written)


def unreachable(exc: httpx.TransportError) -> str:
    """Why the API could not be reached, in a few words."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = str(exc)
    for words in ("connection refused", "connection reset", "name or service not known"):
        if words in text.lower():
            return words
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (UsageError, GroundTruthError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    except OSError as exc:  # a file that cannot be read, an output folder not writable
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"interrupted: {RESUME}\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
