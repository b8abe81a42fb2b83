"""The model's throughput ceiling L: runtimes x processes x threads, measured side by side.

Each configuration runs its processes at once on the same preprocessed photo for a fixed time;
the configurations take turns for several rounds so that load from elsewhere hits them alike.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from typing import Any

from ml_common.settings import Settings


@dataclass(frozen=True)
class Config:
    runtime: str
    processes: int
    threads: int

    @property
    def name(self) -> str:
        return f"{self.runtime} {self.processes}p x {self.threads}t"


CONFIGS = (
    Config("savedmodel", 1, 1),
    Config("savedmodel", 1, 2),
    Config("savedmodel", 2, 1),
    Config("tflite", 1, 1),
    Config("tflite", 1, 2),
    Config("tflite", 2, 1),
)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _worker(config: Config, image: bytes, barrier: Any, seconds: float, out: Any) -> None:
    from ml_celery.detectors.registry import build_detector
    from ml_common.images import decode_rgb

    settings = Settings(_env_file=None, runtime=config.runtime, intra_op_threads=config.threads)  # type: ignore[call-arg, arg-type]
    detector: Any = build_detector(settings)
    detector.warm_up()
    from ml_celery.detectors.preprocess import preprocess

    batch, _ = preprocess(decode_rgb(image, settings.max_image_pixels), detector.input_size)
    barrier.wait()
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        detector.infer(batch)
        latencies.append((time.perf_counter() - t) * 1000)
    out.put((len(latencies), statistics.median(latencies), rss_mb()))


def measure(config: Config, image: bytes, seconds: float) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(config.processes), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(config, image, barrier, seconds, out))
        for _ in range(config.processes)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join()
    return {
        "images_per_s": round(sum(n for n, _, _ in results) / seconds, 3),
        "latency_p50_ms": round(statistics.median(ms for _, ms, _ in results), 2),
        "rss_mb_per_process": round(max(rss for _, _, rss in results), 1),
    }


def ceiling(
    image: bytes, seconds: float = 8, rounds: int = 2, configs: tuple[Config, ...] = CONFIGS
) -> dict[str, Any]:
    """Each configuration's best round, and the best of them all as `L`."""
    best: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for config in configs:
            result = measure(config, image, seconds)
            if result["images_per_s"] > best.get(config.name, {}).get("images_per_s", 0):
                best[config.name] = result
    top = max(best, key=lambda name: best[name]["images_per_s"])
    return {"configs": best, "best": top, "L_images_per_s": best[top]["images_per_s"]}
