"""The README's plots, one per photo size (docs/perf-<size>.png): throughput and p95 latency
against concurrent clients, for each mlprod backend (from a `make bench` JSON) and, where a
`make bench-peers` JSON is given, mlprod and BentoML's sync endpoint and task queue beside it.

`python bench/plot.py bench/results/bench-*.json [bench/results/peers-*.json] --out docs`
redraws them from saved results.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _series(report: dict[str, Any], peers: dict[str, Any] | None, photo: str) -> dict[str, Any]:
    """Per line label: {clients: run} for `photo`."""
    out = {
        f"mlprod ({backend})": e2e["runs"][photo]
        for backend, e2e in report["end_to_end"].items()
        if photo in e2e.get("runs", {})
    }
    for name, by_photo in (peers or {}).get("systems", {}).items():
        if photo in by_photo:
            out[f"{name} (peers run)"] = by_photo[photo]
    return out


def quiet_ceiling(ceiling: dict[str, Any]) -> float | None:
    """L by the wall clock, only when its processes had their cores (`core_share` >= 0.95):
    on a busy machine the wall figure says how much CPU they got, not what the model gives."""
    best = ceiling.get("configs", {}).get(ceiling.get("best"), {})
    return ceiling.get("L_images_per_s") if best.get("core_share", 0) >= 0.95 else None


def plot_photo(report: dict[str, Any], peers: dict[str, Any] | None, photo: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 2.8), dpi=72)
    for label, runs in _series(report, peers, photo).items():
        clients = sorted(int(c) for c in runs)
        rows = [runs[str(c)] for c in clients]
        style = "--" if "peers" in label else "-"
        left.plot(clients, [r["images_per_s"] for r in rows], style, marker="o", label=label)
        right.plot(clients, [r["p95_ms"] for r in rows], style, marker="o", label=label)
    ceiling = quiet_ceiling(report.get("ceiling", {}))
    if ceiling:
        left.axhline(ceiling, color="grey", linestyle=":", label=f"L = {ceiling:.1f}/s")
    in_process = report["in_process"][photo]["images_per_s"]
    left.axhline(in_process, color="green", linestyle="-.", label="in process, 1 at a time")
    model = report.get("model", "")
    left.set(xlabel="concurrent clients", ylabel="images/s", ylim=(0, None), xscale="log")
    right.set(xlabel="concurrent clients", ylabel="p95 ms", ylim=(0, None), xscale="log")
    for axis in (left, right):
        axis.set_xticks([1, 2, 4, 8, 16], ["1", "2", "4", "8", "16"])
    left.set_title(f"{photo} ({model}): throughput", fontsize=9)
    right.set_title(f"{photo}: p95 latency", fontsize=9)
    left.legend(fontsize=6)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def plot(report: dict[str, Any], folder: Path, peers: dict[str, Any] | None = None) -> list[Path]:
    """docs/perf-<size>.png for each photo size of `report`; the files written."""
    photos = list(report["in_process"])
    paths = []
    for photo in photos:
        path = folder / f"perf-{photo}.png"
        plot_photo(report, peers, photo, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bench", type=Path)
    parser.add_argument("peers", type=Path, nargs="?")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    peers = json.loads(args.peers.read_text()) if args.peers else None
    plot(json.loads(args.bench.read_text()), args.out, peers)
