"""What a weights file is, read once and without building the network: ``describe(path)``.

`describe` returns the file's `ModelInfo`: its format (from the content, not the name; only a
TensorRT engine, which has no portable signature, is known by its suffix), what it says about
itself (arch, class count and names, input size, in-graph NMS) and the backend that runs it.
Whatever can be seen wrong without running the file is a `ModelFileError` whose message names
the file and the problem: not a model at all (a README, a JSON config), empty or truncated, a
checkpoint of another network, an ONNX graph that is not a YOLO-NAS export, an engine whose
sidecar records another size. `config_mismatch` then says whether a configuration (backend,
arch, class count, class names) can run what was described.

The supervisor calls both once, before it starts any process, and hands the `ModelInfo` to
the workers (`pipeline.procs.model_info_of`), so a bad file is refused in about a second with
one message instead of being found late, several times, by each stage process.

Cost by format: a text or otherwise unknown file, 16 bytes (torch is not imported); ONNX, its
few descriptive protobuf fields, read without ``import onnx`` (0.7 s by itself) and without an
ONNX Runtime session, the weights skipped by their length; a checkpoint of another network,
its keys read without torch (`stages.detect.checkpoint_keys`); a YOLO-NAS checkpoint,
``torch.load`` with mmap plus a comparison of keys and shapes with the architecture built on
the meta device (no memory); safetensors, one read; an engine, its size and JSON sidecar (no
GPU or TensorRT needed).
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.detect.checkpoint_keys import not_yolo_nas, state_dict_keys
from stages.detect.model_files import ModelFileError, sniff
from stages.detect.postprocess_np import NMS_OUTPUTS, RAW_OUTPUTS
from stages.detect.types import ModelInfo

BackendChoice = Literal["torch", "onnxruntime", "tensorrt"]
Format = Literal["torch", "safetensors", "onnx", "tensorrt"]

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
"""Serialized TensorRT engines: no magic bytes to tell them by, so the suffix decides."""
RUNS: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "safetensors"),
    "onnxruntime": ("onnx",),
    "tensorrt": ("tensorrt",),
}
"""The formats each backend opens."""
_KIND_WORDS = {
    "torch-zip": "a PyTorch checkpoint",
    "torch-legacy": "a PyTorch checkpoint",
    "safetensors": "a safetensors file",
    "json": "a JSON file",
    "onnx?": "an ONNX model",
}
_FORMAT_WORDS = {
    "torch": "a PyTorch checkpoint",
    "safetensors": "a safetensors file",
    "onnx": "an ONNX model",
    "tensorrt": "a TensorRT engine",
}


def backend_for_path(weights: str | Path) -> BackendChoice:
    """The backend ``backend: auto`` picks, from the file's suffix alone: .onnx ->
    onnxruntime, .engine/.plan/.trt -> tensorrt, anything else -> torch."""
    suffix = Path(weights).suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    return "torch"


def _is_text(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4096)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut at 4096 is still text
        return e.start >= len(head) - 3 and b"\0" not in head
    return b"\0" not in head


def _is_json(path: Path) -> bool:
    if path.stat().st_size > 1 << 20:
        return False
    try:
        json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def describe(path: str | Path) -> ModelInfo:
    """The `ModelInfo` of the weights file at ``path`` (format, arch, classes, input size,
    backend), or a `ModelFileError` that names the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"{path}: no such file" if not path.exists() else f"{path}: not a file"
        )
    kind = sniff(path)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return _describe_engine(path, kind)
    if kind in ("torch-zip", "torch-legacy", "safetensors"):
        keys = state_dict_keys(path, kind)  # no torch: another network's weights refused fast
        other = not_yolo_nas(path, keys) if keys is not None else None
        if other is not None:
            raise other
        from stages.detect.weights import describe_checkpoint  # torch: only for checkpoints

        return describe_checkpoint(path, kind)
    if kind == "onnx?":
        return _describe_onnx(path)
    what = "a text file" if _is_text(path) else "a file of unknown content"
    if kind == "json":
        what = "a JSON file" if _is_json(path) else what
    raise ModelFileError(
        f"{path}: this is {what}, not model weights (a PyTorch checkpoint .pt/.pth, "
        ".safetensors, an ONNX export or a TensorRT engine .engine/.plan/.trt)"
    )


def config_mismatch(
    info: ModelInfo,
    *,
    backend: str = "auto",
    weights: str | Path | None = None,
    arch: str | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> str | None:
    """Why a configuration cannot run the model ``info`` describes (None: it can).

    backend: the configured backend; "auto" picks by ``weights``' suffix (`backend_for_path`)
        and then has to agree with the content. arch / num_classes / class_names: what the
        configuration asks for, checked against what the file says (unknowns pass).
    """
    auto = backend == "auto" and weights is not None
    if auto and weights is not None:
        backend = backend_for_path(weights)
    if info.format is not None and backend in RUNS and info.format not in RUNS[backend]:
        how = " (auto picks by the file suffix)" if auto else ""
        fix = f"backend: {info.backend}" if info.backend else "another backend"
        return (
            f"this is {_FORMAT_WORDS.get(info.format, info.format)}, which the {backend} "
            f"backend{how} cannot run: set {fix}"
            + (", or give the file its usual suffix" if how else "")
        )
    if backend == "onnxruntime" and info.nms == "tensorrt":
        return (
            "this ONNX ends in the TensorRT EfficientNMS_TRT plugin, which ONNX Runtime cannot "
            "run: build a TensorRT engine from it, or export with nms='none' or nms='onnx'"
        )
    if num_classes is not None and info.num_classes is not None and num_classes != info.num_classes:
        return f"the model has {info.num_classes} classes but num_classes={num_classes} was asked"
    if arch is not None and info.arch and arch != info.arch:
        return f"the model is {info.arch} but arch={arch!r} was asked"
    if class_names and info.num_classes is not None and len(class_names) != info.num_classes:
        return f"{len(class_names)} class_names were given for a {info.num_classes}-class model"
    return None


# ------------------------------------------------------------------------------ metadata


def class_names_from_metadata(meta: Mapping[str, str]) -> list[str]:
    """``class_names`` of an export's or a sidecar's string metadata: a JSON list, or (older
    files) comma-separated."""
    raw = meta.get("class_names")
    if not raw:
        return []
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        return raw.split(",")
    return [str(n) for n in names] if isinstance(names, list) else []


def info_from_onnx_metadata(
    meta: Mapping[str, str], *, input_hw: tuple[int, int], num_classes: int | None = None
) -> ModelInfo:
    """`ModelInfo` of an ONNX export from its ``metadata_props`` (see
    `stages.detect.export.METADATA_KEYS`); ``input_hw`` and ``num_classes`` come from the
    graph, the metadata's class count wins when it has one."""
    names = class_names_from_metadata(meta)
    if meta.get("num_classes", "").isdigit():
        num_classes = int(meta["num_classes"])
    return ModelInfo(
        arch=meta.get("arch") or None,
        num_classes=num_classes or (len(names) or None),
        class_names=names,
        input_hw=input_hw,
        format="onnx",
        backend="onnxruntime",
        nms=meta.get("nms") or None,
    )


# ------------------------------------------------------------------------------ formats


def _describe_onnx(path: Path) -> ModelInfo:
    try:
        model = _read_onnx(path)
    except _ProtobufError as e:
        if _is_text(path):
            raise ModelFileError(f"{path}: this is a text file, not an ONNX model") from None
        raise ModelFileError(
            f"{path}: not a readable ONNX model, truncated or corrupt ({e}); copy or export "
            "it again"
        ) from None
    if not model.ops or not model.outputs or not model.opsets:
        raise ModelFileError(f"{path}: an ONNX file without a whole graph (truncated?)")
    inputs = [(n, d) for n, d in model.inputs if n not in model.initializers]
    if len(inputs) != 1:
        raise ModelFileError(
            f"{path}: {len(inputs)} inputs {[n for n, _ in inputs]}; a YOLO-NAS export has "
            "one (images)"
        )
    name, dims = inputs[0]
    if len(dims) != 4 or dims[1] != 3:
        raise ModelFileError(f"{path}: input {name} has shape {dims}; expected (B, 3, H, W)")
    h, w = dims[2], dims[3]
    if not isinstance(h, int) or not isinstance(w, int):
        raise ModelFileError(f"{path}: the input's H/W must be fixed, got {dims[2:]}")
    outputs = dict(model.outputs)
    num_classes: int | None = None
    if set(outputs) == set(RAW_OUTPUTS):
        nms = "none"
        scores = outputs["scores"]
        num_classes = scores[-1] if scores and isinstance(scores[-1], int) else None
    elif set(outputs) == set(NMS_OUTPUTS):
        nms = "tensorrt" if "EfficientNMS_TRT" in model.ops else "onnx"
    else:
        raise ModelFileError(
            f"{path}: outputs {sorted(outputs)} are not a YOLO-NAS export's: expected "
            f"{sorted(RAW_OUTPUTS)} (nms='none') or {sorted(NMS_OUTPUTS)} (in-graph NMS)"
        )
    for where in model.external:  # weights stored beside the .onnx (models over 2 GB)
        if not (path.parent / where).is_file():
            raise ModelFileError(
                f"{path}: its weights are stored in {where!r} beside it, which is missing"
            )
    info = info_from_onnx_metadata(model.metadata, input_hw=(h, w), num_classes=num_classes)
    info.nms = nms
    if nms == "tensorrt":
        info.backend = None  # only a TensorRT engine built from it runs
    return info


# ONNX without `import onnx`: that import costs 0.7-0.8 s here (ml_dtypes' extension), more
# than the whole rest of a refusal, and onnx.load would parse every weight into Python
# objects. A ModelProto is plain protobuf wire format; reading the dozen fields below
# (numbers from onnx/onnx.proto3) and skipping the rest by their length takes milliseconds,
# and a field that runs past the end of the file is exactly what truncation looks like.


class _ProtobufError(Exception):
    """Not protobuf, or cut short (the message says where)."""


@dataclass
class _Onnx:
    opsets: int = 0
    ops: set[str] = field(default_factory=set)
    inputs: list[tuple[str, list[int | str]]] = field(default_factory=list)
    outputs: list[tuple[str, list[int | str]]] = field(default_factory=list)
    initializers: set[str] = field(default_factory=set)
    external: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


def _read_onnx(path: Path) -> _Onnx:
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        out = _Onnx()
        for num, value in _fields(buf, 0, len(buf)):
            if num == 7 and isinstance(value, tuple):  # ModelProto.graph
                _read_graph(buf, value, out)
            elif num == 8:  # opset_import
                out.opsets += 1
            elif num == 14 and isinstance(value, tuple):  # metadata_props
                key, val = _entry(buf, value)
                out.metadata[key] = val
        return out


def _read_graph(buf: Any, span: tuple[int, int], out: _Onnx) -> None:
    for num, value in _fields(buf, *span):
        if not isinstance(value, tuple):
            continue
        if num == 1:  # GraphProto.node -> NodeProto.op_type
            out.ops.update(_string(buf, v) for n, v in _fields(buf, *value) if n == 4)
        elif num == 5:  # initializer (TensorProto)
            location, where = 0, ""
            for n, v in _fields(buf, *value):
                if n == 8:  # name
                    out.initializers.add(_string(buf, v))
                elif n == 14 and isinstance(v, int):  # data_location (1: EXTERNAL)
                    location = v
                elif n == 13 and isinstance(v, tuple):  # external_data
                    key, val = _entry(buf, v)
                    where = val if key == "location" else where
            if location == 1:
                out.external.append(where)
        elif num in (11, 12):  # input, output (ValueInfoProto)
            (out.inputs if num == 11 else out.outputs).append(_value_info(buf, value))


def _value_info(buf: Any, span: tuple[int, int]) -> tuple[str, list[int | str]]:
    name, dims = "", []
    for num, value in _fields(buf, *span):
        if num == 1:
            name = _string(buf, value)
        elif num == 2 and isinstance(value, tuple):  # type -> tensor_type -> shape -> dim
            for n, tensor in _fields(buf, *value):
                if n != 1 or not isinstance(tensor, tuple):
                    continue
                for m, shape in _fields(buf, *tensor):
                    if m == 2 and isinstance(shape, tuple):
                        dims = [_dim(buf, d) for k, d in _fields(buf, *shape) if k == 1]
    return name, dims


def _dim(buf: Any, value: Any) -> int | str:
    if not isinstance(value, tuple):
        raise _ProtobufError("a shape dimension that is not a message")
    for num, v in _fields(buf, *value):
        if num == 1 and isinstance(v, int):  # dim_value (int64)
            return v - (1 << 64) if v >= 1 << 63 else v
        if num == 2:  # dim_param
            return _string(buf, v) or "?"
    return "?"


def _entry(buf: Any, span: tuple[int, int]) -> tuple[str, str]:
    """A StringStringEntryProto: (key, value)."""
    key = val = ""
    for num, value in _fields(buf, *span):
        if num == 1:
            key = _string(buf, value)
        elif num == 2:
            val = _string(buf, value)
    return key, val


def _string(buf: Any, value: Any) -> str:
    if not isinstance(value, tuple):
        raise _ProtobufError("a string field that is not length-delimited")
    return bytes(buf[value[0] : value[1]]).decode("utf-8", errors="replace")


def _fields(buf: Any, pos: int, end: int) -> Iterator[tuple[int, int | tuple[int, int] | None]]:
    """(field number, value) of the message in ``buf[pos:end]``: an int for a varint, the
    (start, end) of a length-delimited field, None for a fixed-width one."""
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        num, wire = tag >> 3, tag & 7
        if num == 0:
            raise _ProtobufError(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield num, value
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise _ProtobufError(
                    f"a field of {size} bytes at byte {pos} runs past the end ({end})"
                )
            yield num, (pos, pos + size)
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise _ProtobufError(f"a fixed-width field runs past the end ({end})")
            yield num, None
        else:
            raise _ProtobufError(f"wire type {wire} at byte {pos}")


def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _ProtobufError(f"a number runs past the end ({end})")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _ProtobufError(f"a number longer than 10 bytes at byte {pos}")


def _describe_engine(path: Path, kind: str) -> ModelInfo:
    from stages.detect.engine_sidecar import MIN_ENGINE_BYTES, read_sidecar

    if kind in _KIND_WORDS:
        raise ModelFileError(
            f"{path}: named like a TensorRT engine but it is {_KIND_WORDS[kind]}; build an "
            "engine with `edgestream build-engine MODEL.onnx`, or name the file after what it is"
        )
    size = path.stat().st_size
    if size < MIN_ENGINE_BYTES:
        raise ModelFileError(f"{path}: {size} bytes is too small for a TensorRT engine")
    try:
        sidecar = read_sidecar(path)
    except (OSError, ValueError):  # none, or unreadable: the backend warns and runs without
        return ModelInfo(format="tensorrt", backend="tensorrt")
    if sidecar.engine_bytes and sidecar.engine_bytes != size:
        raise ModelFileError(
            f"{path}: {size} bytes but its sidecar records {sidecar.engine_bytes}: the engine "
            "is truncated or was replaced; copy or build it again"
        )
    return ModelInfo(
        arch=sidecar.arch,
        num_classes=sidecar.num_classes or (len(sidecar.class_names) or None),
        class_names=list(sidecar.class_names),
        input_hw=(int(sidecar.key.input_hw[0]), int(sidecar.key.input_hw[1])),
        format="tensorrt",
        backend="tensorrt",
        nms=sidecar.nms,
    )
