"""Render deploy/grafana/dashboards/mlprod.json without Grafana: each panel's queries run
against a Prometheus (query_range) and are drawn with matplotlib into one PNG.

    python scripts/render_dashboard.py http://127.0.0.1:9090 out.png [--minutes 10]

The integration test tests/integration/test_metrics.py renders it from a live stack; the
README's screenshot is such a render.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy/grafana/dashboards/mlprod.json"


def query_range(prometheus: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    step = max(1, int((end - start) / 200))
    r = httpx.get(f"{prometheus}/api/v1/query_range", timeout=30,
                  params={"query": expr, "start": start, "end": end, "step": step})  # fmt: skip
    r.raise_for_status()
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def render(prometheus: str, out: Path, minutes: float = 10, dashboard: Path = DASHBOARD) -> int:
    """Draw every panel; the number of series drawn."""
    panels = json.loads(dashboard.read_text())["panels"]
    end = time.time()
    start = end - minutes * 60
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3 * rows), squeeze=False)
    drawn = 0
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_title(panel["title"], fontsize=10)
        for target in panel["targets"]:
            for series in query_range(prometheus, target["expr"], start, end):
                xs = [float(t) - end for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, label=legend(target.get("legendFormat", ""), series["metric"]))
                drawn += 1
        ax.set_xlabel("seconds before now", fontsize=8)
        ax.tick_params(labelsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(json.loads(dashboard.read_text())["title"])
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prometheus")
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    render(args.prometheus, args.out, args.minutes)


if __name__ == "__main__":
    main()
