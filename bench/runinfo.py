"""What every benchmark report says about its own run: the commit, the load, whether it counts.

A benchmark shares the machine's cores with whatever else runs: a test suite or a build beside
it squeezes every ratio towards 1. So each report records the load average at its start and end
and the commit it measured, and a run that started above QUIET_LOAD is marked not for
publishing (the README and docs/performance.md quote only unmarked runs).
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench")
ROOT = Path(__file__).resolve().parents[1]
QUIET_LOAD = 1.0  # the 1-minute load average a run may start at and still be published


def commit() -> str:
    """HEAD (12 digits), `+dirty` when the tree has changes; `unknown` outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def start() -> dict[str, Any]:
    """The run's record at its start; says so at once when the machine is not quiet."""
    load = os.getloadavg()
    info: dict[str, Any] = {"commit": commit(), "loadavg_at_start": load}
    if load[0] > QUIET_LOAD:
        info["not_for_publishing"] = (
            f"started at load {load[0]:.2f} (over {QUIET_LOAD}): something else shares the cores"
        )
        logger.warning("NOT FOR PUBLISHING: %s", info["not_for_publishing"])
    return info


def finish(info: dict[str, Any]) -> dict[str, Any]:
    """The record completed at the run's end: the load then, and `publishable`."""
    info["loadavg_at_end"] = os.getloadavg()
    info["publishable"] = "not_for_publishing" not in info
    if not info["publishable"]:
        logger.warning("NOT FOR PUBLISHING: %s", info["not_for_publishing"])
    return info


def banner(info: dict[str, Any]) -> str:
    """One line for a report's table: the commit, the loads, and the mark when there is one."""
    start_load, end_load = info["loadavg_at_start"][0], info.get("loadavg_at_end", [0.0])[0]
    line = f"commit {info['commit']}, load {start_load:.2f} at start, {end_load:.2f} at end"
    mark = info.get("not_for_publishing")
    return f"{line}: NOT FOR PUBLISHING ({mark})" if mark else f"{line}: quiet, publishable"
