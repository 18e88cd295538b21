"""The bare model: frames/s and ms per batch of the backend alone — the pipeline's ceiling.

The backend is opened by `pipeline.procs.open_backend_from`, the function the pipeline's detect
stage calls, from the same config (after `pipeline.procs.cpu_onnx_config`, as ``edgestream
run`` does), so the file, backend, device, threads and NMS settings are the pipeline's. Each
call is ``backend.infer(batch)`` on letterboxed real frames: the forward pass and the
postprocess (NMS), exactly the work the detect stage asks of it per batch; no decode, no
letterbox, no messages. The figure per batch size is the median of the calls made in
``seconds`` (after two warm-up calls).
"""

from __future__ import annotations

import statistics
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
    from pipeline.procs import open_backend_from
    from stages.detect.preprocess import letterbox_batch, resize_to_for

    if not batches or min(batches) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {list(batches)}")
    backend = open_backend_from(with_max_batch(cfg, max(batches)))
    try:
        hw = backend.info.input_hw
        images = [frames[i % len(frames)] for i in range(max(batches))]
        slab, _ = letterbox_batch(images, input_hw=hw, resize_to=resize_to_for(hw))
        rows = []
        for b in batches:
            if on_step is not None:
                on_step(f"bare model, batch {b}")
            x = np.ascontiguousarray(slab[:b])
            for _ in range(2):  # warm-up: first calls allocate and tune
                backend.infer(x)
            times: list[float] = []
            t_end = time.perf_counter() + seconds
            while len(times) < 3 or time.perf_counter() < t_end:
                t0 = time.perf_counter()
                backend.infer(x)
                times.append(time.perf_counter() - t0)
            ms = 1e3 * statistics.median(times)
            rows.append(
                {
                    "batch": b,
                    "ms_per_batch": round(ms, 2),
                    "ms_per_image": round(ms / b, 2),
                    "fps": round(1e3 * b / ms, 2),
                    "calls": len(times),
                }
            )
        return rows
    finally:
        backend.close()


def model_label(cfg: PipelineConfig) -> dict[str, Any]:
    """What ran: weights file, backend, device, threads (for the JSON and the table title)."""
    from pipeline.config import resolve_device

    m = cfg.model
    return {
        "weights": str(m.weights) if m.weights is not None else f"random {m.arch} (seeded)",
        "backend": m.backend,
        "device": resolve_device(m.device),
        "threads": m.threads,
        "max_batch": cfg.batching.max_batch,
    }
