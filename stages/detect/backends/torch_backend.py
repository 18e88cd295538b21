"""PyTorch backend: the nn.Module itself, on CPU or one CUDA device.

The slowest backend to deploy (full torch, no graph optimiser) but the reference for the other
two, and the only one that needs no export step. What it does to be fast anyway:

* the model is re-parameterised (`fuse`) once, on a private deep copy, and runs in eval mode
  under ``torch.inference_mode``;
* the uint8 batch travels to the device as uint8 and is divided by 255 there: 4x fewer bytes
  over PCIe than float32. On CUDA the bytes are staged in a pinned buffer so the copy is a true
  async DMA on the backend's own stream;
* postprocessing (`stages.detect.postprocess.postprocess`) runs on the device; only the final
  rows (<= max_det per image) come back to the host;
* ``cuda_graphs=True`` records one CUDA graph per batch bucket (1, 2, 4, ... max_batch) on
  first use and replays it, padding a batch up to its bucket. That removes the per-layer
  launch overhead (significant at batch 1 for a ~250-kernel net) at the cost of one capture
  per bucket and its static buffers. Postprocessing stays outside the graph: its shapes
  depend on the data.

The /255 divides by a device tensor, not a Python scalar: CUDA turns ``x / 255.0`` into
``x * (1/255)``, which is an ulp off the reference's division for some pixel values.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stages.detect.postprocess import postprocess
from stages.detect.types import Detections, ModelInfo, NMSParams


class TorchBackendError(RuntimeError):
    """The torch backend cannot run as configured (bad device, bad batch)."""


@dataclass
class _Captured:
    """One CUDA graph and its static buffers (batch = ``inputs.shape[0]``)."""

    graph: torch.cuda.CUDAGraph
    inputs: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor


def graph_buckets(max_batch: int) -> list[int]:
    """Batch sizes that get a CUDA graph: powers of two below ``max_batch``, and it."""
    sizes = {max_batch}
    b = 1
    while b < max_batch:
        sizes.add(b)
        b *= 2
    return sorted(sizes)


class TorchBackend:
    """Run a YOLO-NAS ``nn.Module`` (``forward(x) -> (boxes, scores)``).

    device: "cpu", "cuda" or "cuda:N".
    half: FP16 weights and activations (CUDA only): ~2x faster on tensor cores, scores move by
        ~1e-3, which can flip detections sitting right at the threshold.
    max_batch: the largest batch `infer` accepts; also sizes the pinned staging buffer.
    cuda_graphs: capture and replay CUDA graphs (CUDA only; see the module docstring).
    info: what the weights file said about the model; defaults to what the module knows.
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str = "cpu",
        half: bool = False,
        max_batch: int = 8,
        nms_params: NMSParams = NMSParams(),  # noqa: B008 - frozen dataclass
        cuda_graphs: bool = False,
        info: ModelInfo | None = None,
    ) -> None:
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda and not torch.cuda.is_available():
            raise TorchBackendError(
                f"device={device!r} but torch sees no CUDA device "
                "(torch.cuda.is_available() is False); use device='cpu'"
            )
        if half and not cuda:
            raise TorchBackendError("half=True needs a CUDA device (FP16 on CPU is slower)")
        if cuda_graphs and not cuda:
            raise TorchBackendError("cuda_graphs=True needs a CUDA device")
        if max_batch < 1:
            raise TorchBackendError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.nms_params = nms_params
        self.half = half
        self.cuda_graphs = cuda_graphs
        self.info = info or ModelInfo(num_classes=getattr(model, "num_classes", None))
        self._dtype = torch.float16 if half else torch.float32

        model = copy.deepcopy(model)
        fuse = getattr(model, "fuse", None)
        if callable(fuse) and not getattr(model, "fused", False):
            fuse()
        self.model: nn.Module | None = model.eval().to(self.device, self._dtype)
        self._divisor = torch.tensor(255.0, device=self.device)

        h, w = self.info.input_hw
        self._stream: torch.cuda.Stream | None = None
        self._pinned: torch.Tensor | None = None
        if cuda:
            self._stream = torch.cuda.Stream(self.device)
            self._pinned = torch.empty((max_batch, 3, h, w), dtype=torch.uint8, pin_memory=True)
        self._graphs: dict[int, _Captured] = {}

    # ------------------------------------------------------------------ inference

    def infer(self, batch: np.ndarray) -> list[Detections]:
        """Detections per image, in model-input pixels, for a uint8 (B, 3, H, W) RGB batch."""
        b = self._check(batch)
        with torch.inference_mode():
            if self._stream is None:
                # Zero copy, except for read-only arrays (torch.from_numpy warns on those).
                x = np.ascontiguousarray(batch) if batch.flags.writeable else batch.copy()
                return self.infer_device(torch.from_numpy(x))
            assert self._pinned is not None
            staged = self._pinned[:b]
            staged.numpy()[...] = batch  # pageable -> pinned: one host memcpy
            with torch.cuda.stream(self._stream):
                x_u8 = staged.to(self.device, non_blocking=True)
                if self.cuda_graphs:
                    boxes, scores = self._replay(x_u8)
                else:
                    boxes, scores = self._forward(x_u8)
                # `postprocess` copies its small results to the host, which waits for this
                # stream; syncing explicitly also guarantees the pinned buffer is free again.
                dets = postprocess(boxes, scores, self.nms_params)
            self._stream.synchronize()
            return dets

    def infer_device(self, batch: torch.Tensor) -> list[Detections]:
        """`infer` for a uint8 (B, 3, H, W) RGB tensor already on this backend's device (a
        batch gathered on the GPU, say): no staging copy, and it runs on the caller's current
        stream (without CUDA graphs)."""
        if (
            not isinstance(batch, torch.Tensor)
            or batch.dtype != torch.uint8
            or batch.device.type != self.device.type
        ):
            h, w = self.info.input_hw
            raise TorchBackendError(
                f"expected a uint8 (B, 3, {h}, {w}) tensor on {self.device}, got "
                f"{type(batch).__name__} {getattr(batch, 'dtype', '')} "
                f"{getattr(batch, 'device', '')}"
            )
        self._check_shape(tuple(batch.shape))
        with torch.inference_mode():
            boxes, scores = self._forward(batch)
            return postprocess(boxes, scores, self.nms_params)

    def _check(self, batch: np.ndarray) -> int:
        h, w = self.info.input_hw
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.ndim != 4:
            raise TorchBackendError(
                f"expected a uint8 (B, 3, {h}, {w}) numpy batch, got "
                f"{type(batch).__name__} {getattr(batch, 'dtype', '')} "
                f"{getattr(batch, 'shape', '')}"
            )
        return self._check_shape(batch.shape)

    def _check_shape(self, shape: tuple[int, ...]) -> int:
        """The batch size of a (B, 3, H, W) shape this backend takes."""
        if self.model is None:
            raise TorchBackendError("backend is closed")
        h, w = self.info.input_hw
        if len(shape) != 4 or tuple(shape[1:]) != (3, h, w):
            raise TorchBackendError(f"expected (B, 3, {h}, {w}) images, got {shape}")
        b = int(shape[0])
        if not 1 <= b <= self.max_batch:
            raise TorchBackendError(f"batch of {b} images; this backend takes 1..{self.max_batch}")
        return b

    def _forward(self, x_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.model is not None
        x = torch.div(x_u8.float(), self._divisor).to(self._dtype)
        boxes, scores = self.model(x)
        return boxes, scores

    def _replay(self, x_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x_u8.shape[0]
        size = next(s for s in graph_buckets(self.max_batch) if s >= b)
        cap = self._graphs.get(size) or self._capture(size)
        cap.inputs[:b].copy_(x_u8)
        if b < size:
            cap.inputs[b:].zero_()  # padding rows: their outputs are ignored
        cap.graph.replay()
        return cap.boxes[:b], cap.scores[:b]

    def _capture(self, size: int) -> _Captured:
        """Warm up on a side stream (lazy buffers, cuDNN autotuning), then record."""
        h, w = self.info.input_hw
        inputs = torch.zeros((size, 3, h, w), dtype=torch.uint8, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._forward(inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            boxes, scores = self._forward(inputs)
        cap = _Captured(graph, inputs, boxes, scores)
        self._graphs[size] = cap
        return cap

    def close(self) -> None:
        """Drop the model, graphs and buffers (idempotent)."""
        self._graphs.clear()
        self.model = None
        self._pinned = None
        self._stream = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __enter__(self) -> TorchBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
