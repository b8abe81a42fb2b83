"""`mlprod detect` sends its chunks again after a 429, as long as the API's Retry-After says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlprod_client import cli
from mlprod_client.client import ApiError


class RateLimitedApi:
    """Answers 429 to the first `refusals` batches, then takes them (a stand-in for the API)."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.keys: list[str | None] = []

    def create_batch(
        self, named: Any, *, model: Any = None, idempotency_key: Any = None, max_side: Any = None
    ) -> str:
        self.keys.append(idempotency_key)
        if self.refusals:
            self.refusals -= 1
            raise ApiError(429, "rate_limited", "more than 3 upload requests", retry_after_s=7)
        return f"batch-{len(self.keys)}"


def test_a_chunk_refused_with_429_waits_and_goes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(cli.time, "sleep", waits.append)
    manifest = cli.Manifest(tmp_path / "manifest.json")
    manifest.plan(["a.jpg", "b.jpg"], chunk=1)
    api = RateLimitedApi(refusals=2)
    cli.submit(api, manifest, {n: tmp_path / n for n in ("a.jpg", "b.jpg")}, None)  # type: ignore[arg-type]
    assert waits == [7, 7]
    assert [c["batch_id"] for c in manifest.chunks] == ["batch-3", "batch-4"]
    assert api.keys[:3] == [manifest.chunks[0]["key"]] * 3  # the same idempotency key again


def test_other_errors_and_endless_429s_are_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    manifest = cli.Manifest(tmp_path / "manifest.json")
    manifest.plan(["a.jpg"])
    with pytest.raises(ApiError):
        cli.submit(RateLimitedApi(refusals=100), manifest, {}, None)  # type: ignore[arg-type]
