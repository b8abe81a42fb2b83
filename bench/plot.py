"""The README's plot: per photo size, throughput and p95 latency against concurrent clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(report: dict[str, Any], out: Path) -> None:
    """One row per photo size: images/s (left) and p95 latency (right), one line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    photos = list(next(iter(report["end_to_end"].values()))["runs"])
    fig, axes = plt.subplots(len(photos), 2, figsize=(9, 3.0 * len(photos)), dpi=80, squeeze=False)
    ceiling = report.get("ceiling", {}).get("L_images_per_s")
    for (left, right), photo in zip(axes, photos, strict=True):
        for backend, e2e in report["end_to_end"].items():
            clients = sorted(int(c) for c in e2e["runs"][photo])
            runs = [e2e["runs"][photo][str(c)] for c in clients]
            left.plot(clients, [r["images_per_s"] for r in runs], marker="o", label=backend)
            right.plot(clients, [r["p95_ms"] for r in runs], marker="o", label=backend)
        if ceiling:
            left.axhline(ceiling, color="grey", linestyle="--", label=f"L = {ceiling:.1f}/s")
        in_process = report["in_process"][photo]["images_per_s"]
        left.axhline(in_process, color="green", linestyle="-.", label="in process, 1 at a time")
        left.set(xlabel="concurrent clients", ylabel="images/s", ylim=(0, None))
        left.set_title(f"{photo}: throughput", fontsize=9)
        right.set(xlabel="concurrent clients", ylabel="ms", ylim=(0, None))
        right.set_title(f"{photo}: p95 latency", fontsize=9)
        left.legend(fontsize=7)
        right.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
