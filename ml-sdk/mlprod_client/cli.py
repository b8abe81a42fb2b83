"""`mlprod detect PATH...`: a folder through the batch API, with progress, resumable.

A single image goes in one request that answers once it is done (`Prefer: wait`). The
manifest in the output folder records each chunk of files and its Idempotency-Key before the
chunk is sent, so a run killed at any point and run again never submits an image twice.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlprod_client.client import FINAL, ApiError, BatchProgress, Client
from mlprod_client.merge import merge_exports

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
MANIFEST = "mlprod-manifest.json"
CHUNK = 200  # files per batch request
CONFIG = Path("~/.config/mlprod/config.json").expanduser()
DEFAULT_API = "http://localhost:8000"


def find_images(paths: Sequence[Path]) -> dict[str, Path]:
    """Name (relative to the folder given, or the file's own name) → path, sorted by name."""
    found: dict[str, Path] = {}
    for root in paths:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                name = path.relative_to(root).as_posix() if root.is_dir() else path.name
                found.setdefault(name, path)
    return dict(sorted(found.items()))


def settings(args: argparse.Namespace) -> tuple[str, str]:
    """The API's URL and key: flags, then MLPROD_API_URL/MLPROD_API_KEY, then the config file."""
    config: dict[str, str] = json.loads(CONFIG.read_text()) if CONFIG.is_file() else {}
    url = args.api or os.environ.get("MLPROD_API_URL") or config.get("api_url", DEFAULT_API)
    key = os.environ.get("MLPROD_API_KEY") or config.get("api_key", "")
    if not key:
        raise SystemExit(f"set MLPROD_API_KEY, or api_key in {CONFIG}")
    return url, key


class Manifest:
    """Chunks of file names, each with its Idempotency-Key and, once known, its batch id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = json.loads(path.read_text()) if path.is_file() else {"chunks": []}
        self.chunks: list[dict[str, Any]] = data["chunks"]

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
        tmp.write_text(json.dumps({"chunks": self.chunks}, indent=1))
        tmp.replace(self.path)  # a kill mid-write leaves the previous manifest whole


MAX_RATE_WAITS = 10  # 429s in a row on one chunk before giving up


def submit(
    api: Client, manifest: Manifest, images: dict[str, Path], model: str | None,
    max_side: int | None = None,
) -> None:  # fmt: skip
    """Send each chunk not yet sent; past the key's per-minute limit (each file counts), wait as
    long as the API says and send it again (its idempotency key makes that safe)."""
    for chunk in manifest.chunks:
        if chunk["batch_id"] is None:
            named = [(name, images[name]) for name in chunk["files"] if name in images]
            for attempt in range(MAX_RATE_WAITS + 1):
                try:
                    batch_id = api.create_batch(
                        named, model=model, idempotency_key=chunk["key"], max_side=max_side
                    )
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


OUTPUTS = {"jsonl": "results.jsonl", "csv": "results.csv", "coco": "results.coco.json"}


def write_outputs(
    api: Client, batch_ids: Sequence[str], out: Path, args: argparse.Namespace
) -> None:
    exports = [api.export(batch_id, args.format) for batch_id in batch_ids]
    (out / OUTPUTS[args.format]).write_bytes(merge_exports(args.format, exports))
    if args.annotated:
        for batch_id in batch_ids:
            with zipfile.ZipFile(io.BytesIO(api.export(batch_id, "zip"))) as archive:
                archive.extractall(out / "annotated")  # names were made safe by the API


def summary(states: Sequence[BatchProgress]) -> int:
    counts: dict[str, int] = {}
    for state in states:
        for name, n in state.counts.items():
            counts[name] = counts.get(name, 0) + n
    line = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    sys.stderr.write(f"done: {line or 'nothing to do'}\n")
    return 1 if counts.get("failed") or counts.get("cancelled") else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlprod detect", description=__doc__)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="images or folders")
    p.add_argument("--api", help=f"the API's URL (default: MLPROD_API_URL or {DEFAULT_API})")
    p.add_argument("--model", help="a served model (default: the deployment's default)")
    p.add_argument("--format", choices=("jsonl", "csv", "coco"), default="jsonl")
    p.add_argument("--out", type=Path, default=Path("mlprod-results"), help="output folder")
    p.add_argument("--annotated", action="store_true", help="also the annotated images")
    p.add_argument("--chunk", type=int, default=CHUNK, help="files per batch request")
    p.add_argument(
        "--max-side", type=int, metavar="N",
        help="shrink photos whose long side is over N pixels before sending (e.g. 1280; "
        "needs Pillow); boxes stay in each photo's own pixels",
    )  # fmt: skip
    return p


def detect_one(api: Client, chunk: dict[str, Any], image: Path, args: argparse.Namespace) -> int:
    """One image in one request (its retry, with the chunk's key, gets the same task)."""
    [name] = chunk["files"]
    status = api.detect_wait(
        image, name=name, model=args.model, idempotency_key=chunk["key"], max_side=args.max_side
    )
    if status["status"] not in FINAL:
        raise ApiError(504, "not_finished", f"task {status['task_id']} is {status['status']}")
    (args.out / OUTPUTS[args.format]).write_bytes(api.task_export(status["task_id"], args.format))
    if args.annotated and status["status"] == "succeeded":
        annotated = args.out / "annotated" / Path(name).with_suffix(".jpg").name
        annotated.parent.mkdir(exist_ok=True)
        annotated.write_bytes(api.annotated(status["task_id"]))
    sys.stderr.write(f"done: 1 {status['status']}\n")
    return 0 if status["status"] == "succeeded" else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    url, key = settings(args)
    images = find_images(args.paths)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(args.out / MANIFEST)
    manifest.plan(list(images), args.chunk)
    single = len(manifest.chunks) == 1 and len(manifest.chunks[0]["files"]) == 1
    try:
        with Client(url, key) as api:
            if single and manifest.chunks[0]["batch_id"] is None:
                [image] = images.values()
                return detect_one(api, manifest.chunks[0], image, args)
            submit(api, manifest, images, args.model, args.max_side)
            batch_ids = [c["batch_id"] for c in manifest.chunks]
            states = follow(api, batch_ids, sum(len(c["files"]) for c in manifest.chunks))
            write_outputs(api, batch_ids, args.out, args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: run the same command again to resume\n")
        return 130
    except (ApiError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\nrun the same command again to resume\n")
        return 2
    return summary(states)


if __name__ == "__main__":
    raise SystemExit(main())
