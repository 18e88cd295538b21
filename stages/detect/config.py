"""The detect stage's settings: the model, batching and preprocess sections of the pipeline config.

One definition each: the pipeline config composes these models as they are, and the detect
stage's own `DetectStageConfig` extends `BatchingConfig`. Schema only (pydantic and
`pipeline.config.base`): loading a config does not load the detector.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from pipeline.config.base import Arch, ConfigProblems, EnvStr, StrictModel, WeightsFile

MAX_INSTANCES = 16


def model_instances(instances: int | Literal["auto"], backend: str, device: str,
                    threads: int, cpus: int | None) -> tuple[int, int]:  # fmt: skip
    """``(instances, threads per instance)`` of the model section as the detect stage runs it.

    ``backend`` as resolved (onnxruntime, torch, tensorrt), ``device`` as resolved (cpu or
    cuda[:N]); ``cpus`` the cores this process may use. Auto: 2 on a CPU with ONNX Runtime
    and at least 2 cores (2 x ``threads`` when set by hand: auto never oversubscribes the
    CPU), else 1; on a GPU always 1, whatever is asked. With more than one and ``threads`` 0
    (the default), the cores are shared out: each instance gets ``cpus // instances`` threads
    (at least 1); threads set by hand stay as set."""
    cores = max(1, cpus or 1)
    if device != "cpu":
        return 1, threads  # one model per GPU: it batches instead (the detect stage's rule)
    if instances == "auto":
        n = 2 if backend == "onnxruntime" and cores >= 2 * max(1, threads) else 1
    else:
        n = instances
    if n > 1 and threads == 0:
        return n, max(1, cores // n)
    return n, threads


class ModelConfig(StrictModel):
    """The detector: YOLO-NAS weights and the backend that runs them."""

    arch: Arch | None = Field(
        default=None,
        description="Network: yolo_nas_n, _s, _m or _l; null takes it from the "
        "weights file (checkpoints, safetensors, ONNX and engines say or show their arch).",
    )
    weights: WeightsFile | None = Field(
        default=None,
        description="Weights file (.pt/.pth checkpoint, .safetensors, .onnx, .engine/.plan), "
        "relative to this file, or a model name from `edgestream models`; must exist. "
        "Exactly one of weights and random_weights.",
    )
    random_weights: bool = Field(
        default=False,
        description="Seeded random network instead of weights (demo and tests only: every "
        "stage runs, the boxes are meaningless). Needs arch and the torch backend.",
    )
    num_classes: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Class count (1..100000); null: from the weights.",
    )
    class_names: list[EnvStr] | None = Field(
        default=None,
        description="Class names in class-id order; null: from the weights file or COCO's 80.",
    )
    backend: Literal["auto", "torch", "onnxruntime", "tensorrt"] = Field(
        default="auto",
        description="Inference backend; auto picks by suffix (.onnx onnxruntime, "
        ".engine/.plan tensorrt, else torch), except that a PyTorch checkpoint on the CPU runs "
        "as its ONNX export on onnxruntime (exported once, cached by the checkpoint's hash "
        "under ~/.cache/edgestream/onnx; about 2x faster there).",
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto (cuda when present, else cpu), cpu, cuda or cuda:N.",
    )
    half: bool = Field(default=False, description="FP16 inference (torch backend on CUDA only).")
    threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Intra-op CPU threads for the backend (count, 0..256; 0: default, which "
        "with several instances is the cores shared out between them).",
    )
    instances: int | Literal["auto"] = Field(
        default="auto",
        description="Copies of the model that run batches at once in the detect stage (1..16, "
        "or auto). On a CPU, k sessions of n/k threads each do more frames/s than one of n "
        "threads (operators parallelise poorly on few cores, and threads that wait for each "
        "other at every operator stall when decode takes a core away): with ONNX Runtime on 2 "
        "cores, 2 x 1 thread did 105-110 frames/s of the demo model against 83-90 for 1 x 2. "
        "Each copy holds its own weights and buffers (memory x k). auto: 2 on a CPU with ONNX "
        "Runtime and at least 2 cores (2 x threads when threads is set), else 1 (one model "
        "per GPU: it batches instead).",
    )
    conf_threshold: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Score threshold (0..1); lower finds more, and more noise.",
    )
    iou_threshold: float = Field(
        default=0.7, ge=0, le=1, description="NMS IoU above which the lower-scored box goes (0..1)."
    )
    max_detections: int = Field(
        default=300, ge=1, le=10_000, description="Detections kept per image after NMS (1..10000)."
    )
    top_k: int = Field(
        default=1024,
        ge=1,
        le=100_000,
        description="Candidates kept before NMS (1..100000); bounds NMS cost.",
    )
    multi_label: bool = Field(
        default=False,
        description="A box may yield several (class, score) pairs: one object published as "
        "car, person and bicycle at once. false (the runtime default): one box per object, "
        "its best class. true is the reference predict()'s default, which `edgestream detect` "
        "and the parity tests keep.",
    )

    @model_validator(mode="after")
    def _weights_choice(self) -> ModelConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.weights is None and not self.random_weights:
            problems.append((("weights",), "required (or set random_weights: true for a demo)"))
        if self.weights is not None and self.random_weights:
            problems.append((("random_weights",), "set either weights or random_weights, not both"))
        if self.random_weights and self.arch is None:
            problems.append((("arch",), "random_weights needs an arch (yolo_nas_s, _m or _l)"))
        if self.random_weights and self.backend not in ("auto", "torch"):
            problems.append((("backend",), "random_weights runs on the torch backend only"))
        names, n = self.class_names, self.num_classes
        if self.instances != "auto" and not 1 <= self.instances <= MAX_INSTANCES:
            problems.append((("instances",), f"must be 1..{MAX_INSTANCES} or auto"))
        if names is not None and n is not None and len(names) != n:
            problems.append(
                (
                    ("class_names",),
                    f"has {len(names)} names but num_classes is {n}",
                )
            )
        if problems:
            raise ConfigProblems(problems)
        return self


class BatchingConfig(StrictModel):
    """Deadline-aware batching in the detect stage."""

    max_batch: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Frames per inference batch (1..64); a batch leaves as soon as it is full. "
        "TensorRT engines need an optimization profile up to this size.",
    )
    max_wait_ms: float = Field(
        default=10.0,
        ge=0,
        le=1000,
        description="A batch leaves at most this long after its first frame arrived, full or "
        "not (ms, 0..1000): the latency a frame may spend waiting for company.",
    )
    slots_per_camera: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Realtime cameras: frames of one camera that may wait ahead of the model "
        "(1..16). Newest frame wins: when they are all taken, the oldest waiting frame is "
        "replaced by the new one and counted as superseded. 1 gives the lowest latency under "
        "overload; more lets a camera fill a batch on its own when the model is idle.",
    )
    max_frame_age_ms: float | None = Field(
        default=500.0,
        ge=1,
        le=60_000,
        description="Realtime cameras with slots_per_camera > 1: a waiting frame older than "
        "this (capture to batch, ms, 1..60000) is superseded by a newer frame of the same "
        "camera. The newest frame of a camera is never dropped for age, and nothing is "
        "dropped after detection. null: only slots decide. Ignored for realtime: false cameras.",
    )
    calibrate: bool = Field(
        default=True,
        description="Measure at start-up the model's ms per image at batch 1, 2, 4, ... up to "
        "max_batch (once per weights file, backend, device and threads; cached) and batch only "
        "as far as a bigger batch costs >= 10 % less per image; at batch 1 frames never wait "
        "for company (max_wait_ms unused). On most CPUs that is batch 1. false: batch up to "
        "max_batch as configured.",
    )


class PreprocessConfig(StrictModel):
    """Where frames are letterboxed for the model: in the decode processes, or in workers
    between decode and detect."""

    where: Literal["auto", "decode", "workers"] = Field(
        default="auto",
        description="decode: each decode process letterboxes the frames it forwards and sends "
        "them straight to detect (one hop, one full-frame copy and N processes fewer: lower "
        "latency and less CPU where the model is the bottleneck, i.e. on a CPU). workers: "
        "`workers` preprocess processes between decode and detect (letterboxing in parallel, "
        "off the decode processes: many cameras on a GPU). auto: decode when the model runs "
        "on the CPU (model.device cpu, or auto on a machine without an NVIDIA GPU) and this "
        "process tree runs decode and preprocess together, else workers.",
    )
    workers: int = Field(
        default=2,
        ge=1,
        le=32,
        description="Preprocess processes (1..32) when letterboxing runs in workers. Each "
        "letterboxes ~1 frame per 2-5 ms of CPU; more than the cores left after decode and "
        "detect only adds contention.",
    )


def gpu_present(dev: str = "/dev") -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch: a device node of a
    discrete GPU (``/dev/nvidia0``...) or of a Jetson's integrated one (``nvhost-ctrl-gpu``)."""
    from pathlib import Path

    d = Path(dev)
    return any(d.glob("nvidia[0-9]*")) or (d / "nvhost-ctrl-gpu").exists()


def letterbox_in_decode(where: str, device: str, decode_here: bool, preprocess_here: bool,
                        gpu: bool | None = None) -> bool:  # fmt: skip
    """Whether the decode processes letterbox (``preprocess.where`` resolved): ``device`` is
    ``model.device`` as written; ``gpu`` whether the machine has one (None: `gpu_present`).
    Never when decode and preprocess run in different process trees."""
    if where == "workers" or not (decode_here and preprocess_here):
        return False
    if where == "decode":
        return True
    if device == "auto":
        return not (gpu_present() if gpu is None else gpu)
    return device == "cpu"
