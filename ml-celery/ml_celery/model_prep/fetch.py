"""Fetch a published model file (YOLOX), check its pinned sha256, and lay out its folder.

Run as `python -m ml_celery.model_prep.fetch MODEL [--from PATH] [--out DIR]`, or through
`make model MODEL=yolox-nano [MODEL_FROM=PATH]`. With `--from` (a file, or a folder holding it:
air-gapped servers, CI) nothing is downloaded; otherwise the file comes from its public source.
Either way the bytes must match the pinned sha256, or nothing is written: the file is staged
beside its target and renamed into place only once checked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, BinaryIO

from ml_celery.detectors.manifest import METADATA_FILE
from ml_common.models import CATALOG, ModelSpec

logger = logging.getLogger(__name__)
CHUNK = 1 << 20


class ChecksumMismatch(ValueError):
    """The fetched bytes are not the pinned model file."""


def _copy_hashing(source: BinaryIO, target: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: source.read(CHUNK), b""):
        digest.update(chunk)
        target.write(chunk)
    return digest.hexdigest()


def _open_source(spec: ModelSpec, local: Path | None) -> BinaryIO:
    if local is not None:
        path = local / spec.file if local.is_dir() else local
        logger.info("taking %s from %s", spec.file, path)
        return path.open("rb")
    logger.info("downloading %s", spec.url)
    response: BinaryIO = urllib.request.urlopen(spec.url, timeout=60)  # https, pinned sha256
    return response


def _discard(staged: Path, folder: Path | None) -> None:
    """Remove the staged file, and the model folder when this run created it."""
    staged.unlink(missing_ok=True)
    if folder is not None:
        folder.rmdir()


def manifest(spec: ModelSpec) -> dict[str, object]:
    return {
        "name": spec.name,
        "version": f"sha256-{spec.sha256[:12]}",
        "format": spec.format,
        "file": spec.file,
        "licence": spec.licence,
        "source": spec.source,
        "sha256": spec.sha256,
    }


def is_fetched(spec: ModelSpec, out: Path) -> bool:
    try:
        meta = json.loads((out / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("sha256") == spec.sha256 and (out / spec.file).is_file()


def fetch(spec: ModelSpec, out: Path, local: Path | None = None) -> Path:
    """Make sure `out` holds `spec`'s file (checked) and its manifest; returns `out`.

    Raises ChecksumMismatch (nothing written) when the bytes are not the pinned ones."""
    if is_fetched(spec, out):
        logger.info("%s already holds %s", out, spec.name)
        return out
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out, prefix=f".{spec.file}-", delete=False) as staged:
        staged_path = Path(staged.name)
        try:
            with _open_source(spec, local) as source:
                actual = _copy_hashing(source, staged)
        except BaseException:
            _discard(staged_path, out if created else None)
            raise
    if actual != spec.sha256:
        _discard(staged_path, out if created else None)
        raise ChecksumMismatch(f"{spec.file}: sha256 {actual}, expected {spec.sha256}")
    staged_path.chmod(0o644)
    staged_path.rename(out / spec.file)
    meta_staged = out / f".{METADATA_FILE}.tmp"
    meta_staged.write_text(json.dumps(manifest(spec), indent=2) + "\n")
    meta_staged.rename(out / METADATA_FILE)
    if local is not None and (local / "LICENSE").is_file():
        shutil.copyfile(local / "LICENSE", out / "LICENSE")
    logger.info("wrote %s (%s)", out / spec.file, spec.sha256)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from ml_common.settings import get_settings

    fetchable = sorted(name for name, spec in CATALOG.items() if spec.url)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("model", choices=fetchable)
    parser.add_argument("--from", dest="local", type=Path, help="a local file or folder")
    parser.add_argument("--out", type=Path, help="the model folder (default: ML_MODELS_DIR/MODEL)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    out = args.out or (settings.models_dir or settings.model_dir.parent) / args.model
    try:
        fetch(CATALOG[args.model], out, args.local)
    except (ValueError, OSError) as exc:
        logger.error("could not fetch %s: %s", args.model, exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
