"""The bare model: frames/s and ms per batch of the backend alone — the pipeline's ceiling.

The backend is opened by `pipeline.procs.open_backend_from`, the function the pipeline's detect
stage calls, from the same config (after `pipeline.procs.cpu_onnx_config`, as ``edgestream
run`` does), so the file, backend, device, threads and NMS settings are the pipeline's — and
as many copies as the detect stage runs (`model.instances`, `pipeline.procs.detect_instances`),
each in its own thread, all at once, as they run in the pipeline. Each call is
``backend.infer(batch)`` on letterboxed real frames: the forward pass and the postprocess (NMS),
exactly the work the detect stage asks of it per batch; no decode, no letterbox, no messages.
The figure per batch size is the median of the calls made in ``seconds`` (after two warm-up
calls per copy); frames/s is that of all copies together (``instances * batch / median``).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.config import PipelineConfig


def with_max_batch(cfg: PipelineConfig, max_batch: int) -> PipelineConfig:
    """``cfg`` whose ``batching.max_batch`` is ``max_batch`` (what the backend is opened for)."""
    batching = cfg.batching.model_copy(update={"max_batch": max_batch})
    return cfg.model_copy(update={"batching": batching})


def bench_model(
    cfg: PipelineConfig,
    frames: Sequence[np.ndarray],
    batches: Sequence[int],
    seconds: float = 3.0,
    on_step: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per batch size: ``{"batch", "ms_per_batch", "ms_per_image", "fps", "calls"}``.

    frames: RGB images (any size), letterboxed once to the model's input and cycled to fill
    each batch.
    """
    from pipeline.procs import detect_instances, open_backend_from
    from stages.detect.preprocess import letterbox_batch, resize_to_for

    if not batches or min(batches) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {list(batches)}")
    instances, threads = detect_instances(cfg)
    sized = with_max_batch(cfg, max(batches))
    backends = []
    try:
        for _ in range(instances):
            backends.append(open_backend_from(sized, threads))
        hw = backends[0].info.input_hw
        images = [frames[i % len(frames)] for i in range(max(batches))]
        slab, _ = letterbox_batch(images, input_hw=hw, resize_to=resize_to_for(hw))
        rows = []
        for b in batches:
            if on_step is not None:
                on_step(f"bare model, batch {b}")
            x = np.ascontiguousarray(slab[:b])
            times = _calls_at_once(backends, x, seconds)
            ms = 1e3 * statistics.median(times)
            rows.append(
                {
                    "batch": b,
                    "ms_per_batch": round(ms, 2),
                    "ms_per_image": round(ms / b, 2),
                    "fps": round(1e3 * b * instances / ms, 2),
                    "calls": len(times),
                    "instances": instances,
                    "threads": threads,
                }
            )
        return rows
    finally:
        for backend in backends:
            backend.close()


def _calls_at_once(backends: Sequence[Any], x: np.ndarray, seconds: float) -> list[float]:
    """Seconds per ``infer(x)`` call of every backend, each looping in its own thread for
    ``seconds`` (at least 3 calls each, after 2 warm-up calls: first calls allocate and tune)."""
    times: list[list[float]] = [[] for _ in backends]
    start = threading.Barrier(len(backends))

    def loop(backend: Any, out: list[float]) -> None:
        for _ in range(2):
            backend.infer(x)
        start.wait()
        t_end = time.perf_counter() + seconds
        while len(out) < 3 or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            backend.infer(x)
            out.append(time.perf_counter() - t0)

    if len(backends) == 1:
        loop(backends[0], times[0])
        return times[0]
    pairs = zip(backends, times, strict=True)
    workers = [threading.Thread(target=loop, args=(b, t)) for b, t in pairs]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return [t for ts in times for t in ts]


def model_label(cfg: PipelineConfig) -> dict[str, Any]:
    """What ran: weights file, backend, device, threads (for the JSON and the table title)."""
    from pipeline.config import resolve_device

    m = cfg.model
    return {
        "weights": str(m.weights) if m.weights is not None else f"random {m.arch} (seeded)",
        "backend": m.backend,
        "device": resolve_device(m.device),
        "threads": m.threads,
        "instances": m.instances,
        "max_batch": cfg.batching.max_batch,
    }
