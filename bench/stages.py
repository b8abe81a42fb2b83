"""The worker's code in one process, per photo size: each stage's time, and memory over 12 MP.

`stages` runs the pipeline's `analyse()` on each set of the mix and reports the worker's own
per-stage `timings`, the whole task's time and its ratio to inference; `annotate_on_request_ms`
is what drawing the annotated image costs on the first `GET .../image`, when someone asks.
`memory` starts a fresh process, loads the model and warms it up (RSS after that: the model's
footprint in a worker), then analyses 12 MP photos back to back and reports the peak RSS.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from typing import Any

from ml_common.settings import Settings

STAGES = ("decode_ms", "inference_ms", "postprocess_ms", "annotate_ms")


def _settings(threads: int) -> Settings:
    return Settings(_env_file=None, intra_op_threads=threads)  # type: ignore[call-arg]


def _as_result(out: Any) -> Any:
    return out[0] if isinstance(out, tuple) else out  # (result, annotated) before lazy annotation


def _p50(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def stage_times(images: list[bytes], n: int, settings: Settings) -> dict[str, Any]:
    """`n` tasks over `images` in this process (model loaded and warm beforehand)."""
    from ml_celery.pipeline import analyse

    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    whole, cpu, annotate = [], [], []
    for i in range(n):
        data = images[i % len(images)]
        t, c = time.perf_counter(), time.process_time()
        result = _as_result(analyse(data, settings))
        cpu.append((time.process_time() - c) * 1000)
        whole.append((time.perf_counter() - t) * 1000)
        for stage in STAGES:
            value = getattr(result.timings, stage, None)
            if value is not None:
                timings[stage].append(value)
        annotate.append(_annotate_ms(data, result.detections, settings))
    out: dict[str, Any] = {"tasks": n, "task_p50_ms": _p50(whole)}
    out["task_cpu_ms_mean"] = round(statistics.fmean(cpu), 2)  # what a pool process spends on it
    out["images_per_s"] = round(1000 * n / sum(whole), 2)  # one task at a time, one process
    out |= {f"{stage}_p50": _p50(v) for stage, v in timings.items() if v}
    if annotate[0] is not None:
        out["annotate_on_request_ms_p50"] = _p50(annotate)
    if timings["inference_ms"]:
        out["task_over_inference"] = round(out["task_p50_ms"] / out["inference_ms_p50"], 2)
    return out


def _annotate_ms(data: bytes, detections: Any, settings: Settings) -> Any:
    try:
        from ml_api.annotate import render_annotated
    except ImportError:  # the worker still draws it inside analyse()
        return None
    t = time.perf_counter()
    render_annotated(data, detections, settings.max_image_pixels)
    return (time.perf_counter() - t) * 1000


def stages(sets: dict[str, list[bytes]], n: int, threads: int = 1) -> dict[str, Any]:
    """Per set: the stage table's row. One thread, as in a worker process of `make bench`."""
    from ml_celery.pipeline import warm_up

    settings = _settings(threads)
    warm_up(settings)
    return {name: stage_times(images, n, settings) for name, images in sets.items()}


def _vm_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _memory_worker(images: list[bytes], n: int, threads: int, out: Any) -> None:
    from ml_celery.pipeline import analyse, warm_up

    settings = _settings(threads)
    report = {"rss_before_load_mb": _vm_mb("VmRSS")}
    warm_up(settings)
    report["rss_after_load_mb"] = _vm_mb("VmRSS")
    for i in range(n):
        analyse(images[i % len(images)], settings)
    report |= {"rss_end_mb": _vm_mb("VmRSS"), "peak_rss_mb": _vm_mb("VmHWM"), "tasks": n}
    out.put(report)


def memory(images: list[bytes], n: int, threads: int = 1) -> dict[str, Any]:
    """Peak RSS of a fresh worker-like process over `n` analyses of `images` (12 MP)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_memory_worker, args=(images, n, threads, out))
    proc.start()
    report: dict[str, Any] = out.get(timeout=600)
    proc.join()
    report["peak_over_model_mb"] = round(report["peak_rss_mb"] - report["rss_after_load_mb"], 1)
    report["target_peak_mb"] = round(report["rss_after_load_mb"] + 150, 1)
    return report


def table(rows: dict[str, Any]) -> str:
    """The stage table in Markdown: one row per photo size."""
    head = "| photo | task p50 | decode | inference | pre + post | annotate on GET | task / inf |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        cells = [r.get(k, "-") for k in ("decode_ms_p50", "inference_ms_p50", "postprocess_ms_p50")]
        lines.append(
            f"| {name} | {r['task_p50_ms']} ms | {' | '.join(map(str, cells))} | "
            f"{r.get('annotate_on_request_ms_p50', r.get('annotate_ms_p50', '-'))} | "
            f"{r.get('task_over_inference', '-')}x |"
        )
    return "\n".join(lines)
