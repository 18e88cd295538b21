"""What an ONNX file says about itself, read without running it (`inspect_onnx`).

Shared by the engine builder (`stages.detect.engine_cache`) and the ONNX converter
(`stages.detect.quantize`), which the builder calls: neither imports the other for it.
`EngineCacheError` lives here because `inspect_onnx` raises it; `engine_cache` re-uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.detect.describe import class_names_from_metadata


class EngineCacheError(RuntimeError):
    """An engine cannot be built or reused; the message names the cause and the fix."""


@dataclass(frozen=True)
class OnnxFacts:
    """What the builder and the sidecar need from an ONNX file."""

    input_name: str
    input_dtype: str  # "float32" | "float16" | "uint8"
    input_shape: tuple[int | str, ...]  # dims as ints, or their symbolic names
    output_names: tuple[str, ...]
    precision: str  # "fp32" | "fp16" | "int8"
    nms: str  # "none" | "tensorrt" | "onnx"
    metadata: dict[str, str]

    @property
    def input_hw(self) -> tuple[int, int]:
        h, w = self.input_shape[2], self.input_shape[3]
        if not isinstance(h, int) or not isinstance(w, int):
            raise EngineCacheError(f"the ONNX input {self.input_name} has dynamic H/W {h}, {w}")
        return h, w

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.input_shape[0], int)

    @property
    def class_names(self) -> list[str]:
        return class_names_from_metadata(self.metadata)


_ONNX_DTYPES = {1: "float32", 10: "float16", 2: "uint8", 16: "bfloat16"}


def onnx_precision_of(model: Any) -> str:
    """ "int8" if the graph has QuantizeLinear/DequantizeLinear, "fp16" if it computes in
    float16 (Casts to fp16 or fp16 initializers: AutoCast's output), else "fp32"."""
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "int8"
    fp16 = 10
    if any(init.data_type == fp16 for init in model.graph.initializer):
        return "fp16"
    for n in model.graph.node:
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == fp16:
                    return "fp16"
    return "fp32"


def inspect_onnx(onnx_path: str | Path) -> OnnxFacts:
    """Read names, dtypes, precision and metadata without loading external weight files."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise EngineCacheError(f"{onnx_path} is not a readable ONNX model: {e}") from e
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise EngineCacheError(
            f"{onnx_path}: expected one image input, found {[i.name for i in inputs]}"
        )
    inp = inputs[0]
    tt = inp.type.tensor_type
    dims: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim
    ]
    if len(dims) != 4:
        raise EngineCacheError(f"{onnx_path}: input {inp.name} is {len(dims)}-D, expected NCHW")
    outputs = tuple(o.name for o in model.graph.output)
    op_types = {n.op_type for n in model.graph.node}
    if "EfficientNMS_TRT" in op_types:
        nms = "tensorrt"
    elif "NonMaxSuppression" in op_types:
        nms = "onnx"
    else:
        nms = "none"
    return OnnxFacts(
        input_name=inp.name,
        input_dtype=_ONNX_DTYPES.get(tt.elem_type, f"onnx-type-{tt.elem_type}"),
        input_shape=tuple(dims),
        output_names=outputs,
        precision=onnx_precision_of(model),
        nms=nms,
        metadata={p.key: p.value for p in model.metadata_props},
    )
