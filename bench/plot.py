"""The README's plot: throughput and p95 latency against concurrent clients, per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for backend, e2e in report["end_to_end"].items():
        clients = sorted(int(c) for c in e2e["runs"])
        runs = [e2e["runs"][str(c)] for c in clients]
        left.plot(clients, [r["images_per_s"] for r in runs], marker="o", label=backend)
        right.plot(clients, [r["p95_ms"] for r in runs], marker="o", label=backend)
    ceiling = report.get("ceiling", {}).get("L_images_per_s")
    if ceiling:
        left.axhline(ceiling, color="grey", linestyle="--", label=f"L = {ceiling:.1f}/s")
        left.axhline(0.9 * ceiling, color="grey", linestyle=":", label="0.9 L")
    left.axhline(report["in_process"]["images_per_s"], color="green", linestyle="-.",
                 label="in-process, 1 image at a time")  # fmt: skip
    left.set(xlabel="concurrent clients", ylabel="images/s", title="throughput", ylim=(0, None))
    right.set(xlabel="concurrent clients", ylabel="ms", title="p95 latency", ylim=(0, None))
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
