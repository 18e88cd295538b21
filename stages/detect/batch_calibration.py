"""Batching that pays for itself: measure what each batch size buys on the loaded model, once.

A batch only helps when running B images together costs less per image than running them one
by one. On a GPU it usually does (ms per image falls steeply up to 8-32); on a CPU it usually
does not (ONNX Runtime already spreads one image over every core, ms per image is flat from
batch 1 to 8), and then batching only makes frames wait for each other: at 6 cameras a frame
waited for five others' inference before its own result came out.

`calibrate` runs the backend on blank letterboxed images at batch 1, 2, 4, ... up to the
configured ``max_batch`` (after the detect stage's warm-up, so nothing measured is a first
call), estimates the ms per image of each size (conservatively: see `_paired`), and
`choose_batch` picks the largest size that still pays: each step up must cut ms per image by
at least ``gain`` (10 %) against the size chosen so far. With batch 1 chosen, frames never
wait for company (``max_wait_ms`` 0).

Measuring stops at the first size that did not pay (on a CPU: 1 and 2, never 4 or 8).
The result is cached as a small JSON file in ``$XDG_CACHE_HOME/edgestream/batching/``
(beside the ONNX export cache), keyed by what the figures depend on: the weights file (path,
size, mtime), backend, device, input size, thread count, the sizes allowed and the host; any
change measures again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("edgestream.detect.batching")

CACHE_SCHEMA = 1
DEFAULT_GAIN = 0.10
PAD_VALUE = 114  # the letterbox border: a blank frame as preprocess would send it


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edgestream/batching`` (next to the ONNX export cache)."""
    from stages.detect.onnx_cache import default_cache_dir as onnx_dir

    return onnx_dir().parent / "batching"


def batch_sizes(max_batch: int) -> list[int]:
    """The sizes measured: powers of two below ``max_batch``, and ``max_batch`` itself."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return [*sizes, max_batch]


def choose_batch(ms_per_image: dict[int, float], gain: float = DEFAULT_GAIN) -> int:
    """The largest measured size worth batching to: walking up the sizes, a size is taken when
    its ms per image is at least ``gain`` (a fraction) below the size taken so far. Comparing
    with the size taken (not merely the next smaller one) keeps a run of small, noisy gains
    from adding up to a batch that buys nothing."""
    if not ms_per_image:
        raise ValueError("no measurements")
    sizes = sorted(ms_per_image)
    chosen = sizes[0]
    for b in sizes[1:]:
        if ms_per_image[b] <= (1.0 - gain) * ms_per_image[chosen]:
            chosen = b
    return chosen


@dataclass(frozen=True)
class CalibrationKey:
    """What the figures depend on; a cache entry is used only when every field is equal."""

    weights: str  # resolved path, or "random:ARCH" for seeded random weights
    weights_bytes: int
    weights_mtime_ns: int
    backend: str
    device: str
    input_hw: tuple[int, int]
    threads: int
    max_batch: int
    host: str = field(default_factory=platform.node)

    @staticmethod
    def for_model(
        weights: Path | str | None,
        backend: str,
        device: str,
        input_hw: Sequence[int],
        threads: int,
        max_batch: int,
        arch: str | None = None,
    ) -> CalibrationKey:
        if weights is None:
            name, size, mtime = f"random:{arch}", 0, 0
        else:
            path = Path(weights).resolve()
            st = path.stat()
            name, size, mtime = str(path), st.st_size, st.st_mtime_ns
        hw = (int(input_hw[0]), int(input_hw[1]))
        return CalibrationKey(name, size, mtime, backend, device, hw, threads, max_batch)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_hw"] = list(self.input_hw)
        return d

    def digest(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CalibrationSpec:
    """What the detect stage needs to key its calibration (the backend adds its name and input
    size): the weights file it runs (None: seeded random weights of ``arch``), the device and
    thread count it runs with. ``cache_dir``: None is `default_cache_dir`. ``gain``: see
    `choose_batch`."""

    weights: Path | None
    device: str
    threads: int = 0
    arch: str | None = None
    cache_dir: Path | None = None
    gain: float = DEFAULT_GAIN
    clock: Callable[[], float] = time.perf_counter  # seconds (tests give a fake one)


@dataclass(frozen=True)
class BatchPlan:
    """What the detect stage batches: up to ``max_batch`` images, waiting at most
    ``max_wait_ms`` for company. ``ms_per_image``: the figures it was chosen from (size ->
    median ms per image); ``cached``: they came from the cache file."""

    max_batch: int
    max_wait_ms: float
    ms_per_image: dict[int, float]
    cached: bool = False

    def describe(self) -> str:
        figures = ", ".join(f"{b}: {ms:.1f}" for b, ms in sorted(self.ms_per_image.items()))
        where = "cached" if self.cached else "measured"
        if self.max_batch == 1:
            policy = "batch 1, no batching wait (a bigger batch does not save time per image)"
        else:
            policy = f"batches of up to {self.max_batch}, max_wait_ms {self.max_wait_ms:g}"
        return f"{policy}; ms per image by batch size ({where}): {figures}"


def measure(infer: Callable[[np.ndarray], Any], input_hw: Sequence[int], sizes: Sequence[int],
            gain: float = DEFAULT_GAIN, min_rounds: int = 3, max_rounds: int = 25,
            budget_s: float = 1.5, clock: Callable[[], float] = time.perf_counter,
            ) -> dict[int, float]:  # fmt: skip
    """ms per image of ``infer`` at each of ``sizes`` (ascending), on blank letterboxed images.

    Each size gets an untimed call first (a new shape: ONNX Runtime and cuDNN plan it), then
    the sizes are timed in interleaved rounds (1, 2, 1, 2, ...; ``min_rounds`` to
    ``max_rounds``, as many as fit in ``budget_s``), so a burst of load from other processes
    hits every size alike; each size's figure is the upper quartile of its per-round ratio
    to the smallest size, times that size's median (`_paired`). It starts with the two
    smallest sizes and adds the next one only while the largest so far paid (see
    `choose_batch`) or came within half the gain of paying: on a CPU where batching buys
    nothing only 1 and 2 run."""
    inputs: dict[int, np.ndarray] = {}
    times: dict[int, list[float]] = {}

    def add(b: int) -> None:
        x = np.full((b, 3, int(input_hw[0]), int(input_hw[1])), PAD_VALUE, np.uint8)
        infer(x)
        inputs[b] = x
        times[b] = []

    for b in sizes[:2]:
        add(b)
    rest = list(sizes[2:])
    while True:
        t_end = clock() + budget_s
        rounds = 0
        while rounds < min_rounds or (rounds < max_rounds and clock() < t_end):
            for b, x in inputs.items():
                t0 = clock()
                infer(x)
                times[b].append(1e3 * (clock() - t0) / b)
            rounds += 1
        figures = _paired(times)
        chosen, last = choose_batch(figures, gain), max(figures)
        promising = figures[last] <= (1.0 - gain / 2) * figures[chosen]
        if not rest or (chosen != last and not promising):
            return figures
        add(rest.pop(0))


def _paired(times: dict[int, list[float]]) -> dict[int, float]:
    """Per size, ms per image estimated conservatively: the smallest size's median, times the
    upper quartile of the size's per-round ratio to the smallest size. Times of one round were
    taken within moments of each other, so the ratio cancels load that came and went between
    rounds, and the upper quartile needs a size to win in most rounds, not in a lucky few: on
    a loaded CPU where batching buys nothing, noise alone does not make a batch look 10 %
    cheaper."""
    first = min(times)
    base = statistics.median(times[first])
    out = {first: base}
    for b, ts in times.items():
        if b != first:
            paired = times[first][-len(ts) :]  # a size added later ran in the last rounds
            ratios = [t / t0 for t, t0 in zip(ts, paired, strict=True)]
            out[b] = base * statistics.quantiles(ratios, n=4, method="inclusive")[2]
    return out


def _read(path: Path, key: CalibrationKey) -> dict[int, float] | None:
    try:
        doc = json.loads(path.read_text())
        if doc.get("schema") != CACHE_SCHEMA or doc.get("key") != key.to_json():
            return None
        return {int(b): float(ms) for b, ms in doc["ms_per_image"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write(path: Path, key: CalibrationKey, ms_per_image: dict[int, float]) -> None:
    doc = {
        "schema": CACHE_SCHEMA,
        "key": key.to_json(),
        "ms_per_image": {str(b): round(ms, 3) for b, ms in sorted(ms_per_image.items())},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _prune(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    finally:
        tmp.unlink(missing_ok=True)


def _prune(folder: Path) -> None:
    """Remove entries whose weights file is gone (temporary exports, deleted models), so the
    folder does not grow with every model ever run; anything unreadable is left alone."""
    for entry in folder.glob("*.json"):
        try:
            weights = json.loads(entry.read_text())["key"]["weights"]
            if Path(weights).is_absolute() and not Path(weights).exists():
                entry.unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError):
            continue


def calibrate(infer: Callable[[np.ndarray], Any], key: CalibrationKey, max_wait_ms: float,
              cache_dir: Path | None = None, gain: float = DEFAULT_GAIN,
              clock: Callable[[], float] = time.perf_counter) -> BatchPlan:  # fmt: skip
    """The `BatchPlan` for the model ``infer`` runs: from the cache file of ``key`` when there
    is one, else measured now (and cached; a cache folder that cannot be written only costs
    measuring again next time). ``max_wait_ms``: the configured wait, kept when batching pays."""
    path = (cache_dir or default_cache_dir()) / f"{key.digest()}.json"
    figures = _read(path, key)
    cached = figures is not None
    if figures is None:
        figures = measure(infer, key.input_hw, batch_sizes(key.max_batch), gain, clock=clock)
        try:
            _write(path, key, figures)
        except OSError as e:
            log.warning("detect: cannot cache the batch calibration in %s: %s", path, e)
    chosen = choose_batch(figures, gain)
    return BatchPlan(chosen, max_wait_ms if chosen > 1 else 0.0, figures, cached)
