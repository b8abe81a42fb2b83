"""The summary `mlprod detect` ends with: counts, each failed file with its reason, each
skipped file with why, and where the results went."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlprod_client.client import BatchProgress

if TYPE_CHECKING:
    from mlprod_client.client import Client
    from mlprod_client.outputs import Written

MAX_NAMED = 50  # files named per kind (failed, skipped); past that, how many more
PAGE = 1000  # batch items read per request


@dataclass
class Outcome:
    """Counts per final state, and each file that did not succeed with its reason."""

    counts: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, states: Sequence[BatchProgress], failed: list[tuple[str, str]]) -> Outcome:
        counts: dict[str, int] = {}
        for state in states:
            for name, n in state.counts.items():
                counts[name] = counts.get(name, 0) + n
        return cls(counts, failed)


def reason(item: dict[str, Any]) -> str:
    """Why a failed or cancelled task or batch item did not succeed."""
    error = item.get("error")
    if error:
        return f"{error['type']}: {error['message']}" if error.get("message") else error["type"]
    return str(item["status"])


def single_outcome(name: str, status: dict[str, Any]) -> Outcome:
    failed = [] if status["status"] == "succeeded" else [(name, reason(status))]
    return Outcome({status["status"]: 1}, failed)


def failed_items(api: Client, states: Sequence[BatchProgress]) -> list[tuple[str, str]]:
    """(file name, reason) of each item of the batches that failed or was cancelled."""
    failed: list[tuple[str, str]] = []
    for state in states:
        if not (state.counts.get("failed") or state.counts.get("cancelled")):
            continue
        offset = 0
        while offset < state.total:
            page = api.batch(state.batch_id, offset=offset, limit=PAGE)
            failed += [
                (item["file_name"], reason(item))
                for item in page.items
                if item["status"] in ("failed", "cancelled")
            ]
            if not page.items:
                break
            offset += len(page.items)
    return failed


def _named(kind: str, entries: Sequence[tuple[str, str]]) -> list[str]:
    lines = [f"{kind} {name}: {why}" for name, why in entries[:MAX_NAMED]]
    if len(entries) > MAX_NAMED:
        lines.append(f"… and {len(entries) - MAX_NAMED} more {kind}")
    return lines


def report(outcome: Outcome, skipped: dict[str, str], written: Written | None) -> int:
    """Write the summary to stderr; the exit status: 1 if any file failed, else 0."""
    counts = ", ".join(f"{n} {state}" for state, n in outcome.counts.items() if n)
    lines = [f"done: {counts}"] if counts else []
    lines += _named("failed", outcome.failed)
    lines += _named("skipped", sorted(skipped.items()))
    if written is not None:
        lines += [f"results: {written.path}", *written.notes]
    sys.stderr.write("".join(line + "\n" for line in lines))
    return 1 if outcome.failed else 0
