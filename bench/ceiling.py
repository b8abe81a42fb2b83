"""The model's throughput ceiling L: the network alone, in N processes x T threads at once.

Each process loads the model, sets one preprocessed photo as the input once and warms up; only
then do all of them start together, each calling `interpreter.invoke()` until one shared end
time (the plain loop: no decode, no pre/post-processing, no copy in or out). Every process also
reports the CPU time it got: a process that had less than its core (another job on the machine)
shows as `core_share` < 1, and `cpu_bound_images_per_s` says what the configuration gives with
each process on a core of its own. `via=detector` runs the worker's `detector.infer` instead
(the signature runner: input copied in, outputs copied out), to show what that wrapper costs.
`runtime=onnxruntime` is YOLOX-Nano, the default model, as its workers run it (`session.run` on
one letterboxed input); `tflite` is NanoDet-g on LiteRT. L is the best plain loop of the runtime
the measured model serves on.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import statistics
import time
from dataclasses import dataclass
from typing import Any

from ml_common.settings import Settings


@dataclass(frozen=True)
class Config:
    processes: int
    threads: int
    via: str = "invoke"  # or "detector"
    runtime: str = "tflite"  # NanoDet-g on LiteRT; "onnxruntime": YOLOX-Nano

    @property
    def name(self) -> str:
        return f"{self.runtime} {self.processes}p x {self.threads}t ({self.via})"


ONNX = "onnxruntime"
MODEL_OF = {ONNX: "yolox-nano", "tflite": "nanodet-g-416"}
CONFIGS = (
    Config(1, 1, runtime=ONNX),
    Config(2, 1, runtime=ONNX),
    Config(1, 1),
    Config(2, 1),
    Config(2, 1, via="detector"),
)


def _vm_kb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0.0


def _onnx_loop(image: bytes, threads: int) -> Any:
    """YOLOX-Nano's `session.run` on one letterboxed input, as the worker calls it."""
    from ml_celery.detectors.preprocess import topleft_bgr_input
    from ml_celery.detectors.registry import build_detector
    from ml_celery.detectors.yolox import PAD_VALUE
    from ml_common.images import decode_rgb

    settings = Settings(_env_file=None, intra_op_threads=threads)  # type: ignore[call-arg]
    detector: Any = build_detector(settings, MODEL_OF[ONNX])
    picture = decode_rgb(image, settings.max_image_pixels)
    batch, _ = topleft_bgr_input(picture, detector.input_size, PAD_VALUE)
    feed = {detector._input: batch}
    return lambda: detector._session.run(None, feed)


def _loop(config: Config, image: bytes) -> Any:
    """A zero-argument callable that runs the network once on `image`, warmed up."""
    from ml_celery.detectors.preprocess import preprocess
    from ml_celery.detectors.registry import build_detector
    from ml_common.images import decode_rgb

    if config.runtime == ONNX:
        step = _onnx_loop(image, config.threads)
        for _ in range(3):
            step()
        return step
    settings = Settings(_env_file=None, runtime=config.runtime, intra_op_threads=config.threads)  # type: ignore[call-arg, arg-type]
    detector: Any = build_detector(settings, MODEL_OF["tflite"])
    batch, _ = preprocess(decode_rgb(image, settings.max_image_pixels), detector.input_size)
    if config.via == "detector":
        step = lambda: detector.infer(batch)  # noqa: E731
    else:
        from ml_celery.detectors.litert import TFLITE_FILE, load_interpreter

        interpreter = load_interpreter(settings.model_dir / TFLITE_FILE, config.threads)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
        step = interpreter.invoke
    for _ in range(3):
        step()
    return step


def _worker(config: Config, image: bytes, start: Any, seconds: float, out: Any) -> None:
    step = _loop(config, image)
    start.wait()  # every process loaded and warm: the timed window starts now, for all
    latencies = []
    cpu0, t0 = time.process_time(), time.perf_counter()
    end = t0 + seconds
    while (t := time.perf_counter()) < end:
        step()
        latencies.append((time.perf_counter() - t) * 1000)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    out.put((len(latencies), wall, cpu, statistics.median(latencies), _vm_kb("VmRSS") / 1024))


def _result(out: Any, procs: list[Any]) -> Any:
    """The next process's figures; fails at once when one of them died instead of waiting."""
    while True:
        try:
            return out.get(timeout=2)
        except queue.Empty:
            if any(proc.exitcode for proc in procs):
                raise RuntimeError("a ceiling process failed (its traceback is above)") from None


def measure(config: Config, image: bytes, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(config.processes), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(config, image, start, seconds, out))
        for _ in range(config.processes)
    ]
    for proc in procs:
        proc.start()
    results = [_result(out, procs) for _ in procs]
    for proc in procs:
        proc.join()
    calls = sum(r[0] for r in results)
    cpu_ms_per_call = 1000 * sum(r[2] for r in results) / calls
    core_share = min(r[2] / r[1] / config.threads for r in results)
    return {
        "images_per_s": round(sum(r[0] / r[1] for r in results), 2),
        "latency_p50_ms": round(statistics.median(r[3] for r in results), 2),
        "cpu_ms_per_call": round(cpu_ms_per_call, 2),
        "core_share": round(core_share, 3),
        # single-threaded processes only: a thread pool's CPU time includes its spinning
        "cpu_bound_images_per_s": round(1000 * config.processes / cpu_ms_per_call, 2)
        if config.threads == 1
        else None,
        "rss_mb_per_process": round(max(r[4] for r in results), 1),
    }


def ceiling(
    image: bytes, seconds: float = 8, rounds: int = 2, configs: tuple[Config, ...] = CONFIGS
) -> dict[str, Any]:
    """Each configuration's best round (they take turns, so load from elsewhere hits them alike),
    the best plain loop per runtime, and as `L` that of the default model's (ONNX Runtime) when
    measured, else LiteRT's."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for config in configs:
            result = measure(config, image, seconds)
            if result["images_per_s"] > best.get(config.name, {}).get("images_per_s", 0):
                best[config.name] = result
    tops = {}
    for runtime in dict.fromkeys(c.runtime for c in configs):
        plain = [c.name for c in configs if c.via == "invoke" and c.runtime == runtime]
        tops[runtime] = max(plain, key=lambda name: best[name]["images_per_s"])
    top = tops.get(ONNX) or next(iter(tops.values()))
    return {
        "configs": best,
        "best": top,
        "model": MODEL_OF[top.split()[0]],
        "L_images_per_s": best[top]["images_per_s"],
        "L_by_model": {MODEL_OF[r]: best[name]["images_per_s"] for r, name in tops.items()},
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "loadavg": os.getloadavg(),
    }


def cpu_model() -> dict[str, Any]:
    """The processor and the vector extensions XNNPACK picks its kernels by (hosts differ)."""
    model, flags = "", set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    return {"model": model, "flags": [f for f in wanted if f in flags]}


if __name__ == "__main__":
    import argparse
    import json
    import sys

    from photos import photo_set

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    report = ceiling(photo_set("small")[0], args.seconds, args.rounds)
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
