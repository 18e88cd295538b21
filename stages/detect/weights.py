"""Load and save YOLO-NAS weights: super-gradients checkpoints, plain state_dicts, safetensors.

Reading never executes code from the file. ``torch.load`` runs with ``weights_only=True``;
checkpoints written by super-gradients' Trainer may also pickle Python objects (omegaconf
lists of class names, numpy scalars for metrics). Those classes are replaced by inert
stand-ins that only record their data, so the class names can still be read out of them.
The trade-off: a checkpoint that *needs* its classes to make sense (a pickled whole model)
is refused instead of imported.

What is accepted, in order of preference inside a checkpoint dict: ``ema_net`` (the EMA
weights the reference's pretrained loader also prefers), ``net``, ``state_dict``, or the dict
itself when it maps names to tensors. A ``module.`` prefix (DataParallel/DDP) or
``_orig_mod.`` (torch.compile) on every key is stripped. ``processing_params`` supplies class
names and the input size when present.
"""

from __future__ import annotations

import functools
import json
import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stages.detect.checkpoint_keys import find_state_dict, not_yolo_nas, strip_wrappers
from stages.detect.model_files import ModelFileError, sniff
from stages.detect.nn import ARCHS, YoloNAS
from stages.detect.types import ModelInfo

log = logging.getLogger(__name__)

CLS_KEY = "heads.head1.cls_pred.weight"
"""Its first dimension is the class count."""
_CLS_PRED = ".cls_pred."
_SAFETENSORS_FORMAT = "edgestream-yolo-nas"


class WeightsError(ModelFileError):
    """A weights file that cannot be used, with a message that says why and what to do."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _sniff(path: Path) -> str:
    """The file's kind from its first bytes (`stages.detect.describe.sniff`)."""
    try:
        return sniff(path)
    except ModelFileError as e:  # an empty file
        raise WeightsError(str(e)) from None


def _looks_like_onnx(path: Path) -> bool:
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return len(proto.graph.node) > 0


class _Opaque:
    """Inert stand-in for a class pickled in a checkpoint: stores its data, runs nothing."""

    qualname = "?"

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.qualname} from checkpoint>"


def _torch_load(path: Path, mmap: bool) -> Any:
    """mmap (zip checkpoints only): tensors are paged in when used, so reading a big
    checkpoint for its metadata (input size, class names) costs no full read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        unsafe = _unsafe_globals(path)
        if not unsafe:
            raise WeightsError(f"{path}: not a loadable PyTorch checkpoint ({e})") from e
    stand_ins: list[Any] = [(type(n, (_Opaque,), {"qualname": n}), n) for n in unsafe]
    log.debug("%s: standing in for pickled classes %s", path, unsafe)
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise WeightsError(
            f"{path}: the checkpoint pickles Python objects that cannot be read safely "
            f"({', '.join(unsafe[:5])}): save its state_dict instead "
            f"(torch.save(model.state_dict(), ...))"
        ) from e


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return []


def _check_zip(path: Path) -> None:
    """Truncation and TorchScript archives, told apart before torch sees the file."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise WeightsError(
            f"{path}: the checkpoint is truncated or corrupt (incomplete zip archive: {e}); "
            "copy or download it again"
        ) from e
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        raise WeightsError(
            f"{path}: this is a TorchScript archive, not a checkpoint; pass the original "
            "super-gradients .pth checkpoint or a state_dict"
        )


def _read_torch(path: Path) -> Any:
    is_zip = zipfile.is_zipfile(path) or _sniff(path) == "torch-zip"
    if is_zip:
        _check_zip(path)  # raises unless it is a whole zip archive
    try:
        return _torch_load(path, mmap=is_zip)
    except WeightsError:
        raise
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        first = str(e).split(". ")[0].strip() or repr(e)
        raise WeightsError(
            f"{path}: the checkpoint is truncated or corrupt ({first}); copy or download it again"
        ) from e


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path}: the safetensors file is truncated or corrupt ({e})") from e
    return tensors, meta


def _plain(obj: Any, depth: int = 0) -> Any:
    """Python data out of a loaded object, looking through `_Opaque` stand-ins (omegaconf
    containers keep their items in ``_content``, nodes their value in ``_val``)."""
    if depth > 20:
        return None
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, list | tuple):
        return [_plain(x, depth + 1) for x in obj]
    if isinstance(obj, Mapping):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, _Opaque):
        state = obj.state
        if isinstance(state, Mapping):
            for key in ("_content", "_val"):
                if key in state:
                    return _plain(state[key], depth + 1)
            if "__dict__" in state:  # some containers pickle (__dict__, slots)
                return _plain(state["__dict__"], depth + 1)
            return {"__class__": obj.qualname, **_plain(dict(state), depth + 1)}
        if isinstance(state, tuple) and state and isinstance(state[0], Mapping):
            return _plain(state[0], depth + 1)
        return None
    return None


def _state_dict_from(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state_dict, checkpoint extras) from whatever ``torch.load`` returned."""
    if isinstance(obj, torch.nn.Module):  # only reachable through add_safe_globals
        return dict(obj.state_dict()), {}
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"{path}: expected a checkpoint dict or a state_dict, found {type(obj).__name__}"
        )
    found = find_state_dict(obj, lambda v: isinstance(v, Tensor))
    if found is not None:
        key, sd = found
        if key == "ema_net":
            log.info("%s: using the EMA weights (ema_net)", path)
        return dict(sd), {k: v for k, v in obj.items() if key is not None and k != key}
    keys = ", ".join(map(str, list(obj)[:8]))
    raise WeightsError(
        f"{path}: a dict without model weights (keys: {keys}); expected a super-gradients "
        "checkpoint ('net' / 'ema_net') or a state_dict"
    )


def _strip_prefixes(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return dict(zip(strip_wrappers(list(sd)), sd.values(), strict=True))


def read_weights(path: str | Path) -> tuple[dict[str, Tensor], ModelInfo]:
    """The state_dict in ``path`` and what the file says about itself (arch, class names,
    input size: whatever it carries). Raises `WeightsError` for anything unusable."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    kind = _sniff(path)
    info = ModelInfo()
    if kind == "safetensors":
        sd, meta = _read_safetensors(path)
        info.arch = meta.get("arch") or None
        info.class_names = _json_list(meta.get("class_names"))
        hw = _json_list(meta.get("input_hw"))
        if len(hw) == 2:
            info.input_hw = (int(hw[0]), int(hw[1]))
        return _strip_prefixes(sd), info
    if kind == "json":
        raise WeightsError(f"{path}: this is a JSON file, not model weights")
    if kind == "onnx?" and _looks_like_onnx(path):
        raise WeightsError(
            f"{path}: this is an ONNX model, use --backend onnxruntime (or tensorrt) to run it; "
            "PyTorch weights were expected here"
        )
    if kind not in ("torch-zip", "torch-legacy"):
        raise WeightsError(
            f"{path}: not a PyTorch checkpoint or a safetensors file (unrecognised content)"
        )
    sd, extras = _state_dict_from(_read_torch(path), path)
    _fill_info(info, extras)
    return _strip_prefixes(sd), info


def _json_list(text: str | None) -> list[Any]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def _fill_info(info: ModelInfo, extras: Mapping[str, Any]) -> None:
    ours = _plain(extras.get("edgestream"))
    if isinstance(ours, dict):
        info.arch = ours.get("arch") if isinstance(ours.get("arch"), str) else None
    params = _plain(extras.get("processing_params"))
    if not isinstance(params, dict):
        return
    names = params.get("class_names")
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        info.class_names = list(names)
    hw = _input_hw(params.get("image_processor"))
    if hw is not None:
        info.input_hw = hw


def _input_hw(processor: Any) -> tuple[int, int] | None:
    """The network input size from a super-gradients processing config: the output shape of
    its padding step (or, failing that, of its rescale step)."""
    found: dict[str, tuple[int, int]] = {}

    def walk(node: Any, name: str) -> None:
        if isinstance(node, list):
            for v in node:
                walk(v, name)
        if not isinstance(node, dict):
            return
        if isinstance(node.get("__class__"), str):  # an object, through `_plain`
            name = node["__class__"]
        shape = node.get("output_shape")
        if isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) for v in shape):
            found.setdefault("pad" if "Pad" in name else "rescale", (shape[0], shape[1]))
        for k, v in node.items():
            walk(v, k if isinstance(k, str) and k[:1].isupper() else name)

    walk(processor, "")
    return found.get("pad") or found.get("rescale")


# --------------------------------------------------------------------------------------------
# Matching weights to an architecture
# --------------------------------------------------------------------------------------------


@functools.cache
def _arch_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Every state_dict key and shape of ``arch`` (class-count dependent keys excluded)."""
    with torch.device("meta"):
        model = ARCHS[arch](num_classes=1)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if _CLS_PRED not in k}


def _mismatch(sd: Mapping[str, Tensor], arch: str) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, wrong-shape) keys of ``sd`` against ``arch``."""
    want = _arch_shapes(arch)
    have = {k: tuple(v.shape) for k, v in sd.items() if _CLS_PRED not in k}
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    wrong = [f"{k} {have[k]} != {want[k]}" for k in want if k in have and have[k] != want[k]]
    cls = [k for k in sd if _CLS_PRED in k]
    if len(cls) != 6:  # weight + bias of three heads
        missing += [f"heads.head{i}.cls_pred.{p}" for i in (1, 2, 3) for p in ("weight", "bias")]
    return missing, unexpected, wrong


def infer_arch(sd: Mapping[str, Tensor]) -> str | None:
    """The architecture whose keys and shapes ``sd`` matches exactly, or None."""
    for arch in ARCHS:
        if not any(_mismatch(sd, arch)):
            return arch
    return None


def _closest_arch(sd: Mapping[str, Tensor]) -> str:
    return min(ARCHS, key=lambda a: sum(len(x) for x in _mismatch(sd, a)))


def _arch_error(path: Path, sd: Mapping[str, Tensor], arch: str | None) -> WeightsError:
    target = arch or _closest_arch(sd)
    missing, unexpected, wrong = _mismatch(sd, target)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        parts.append(f"{len(wrong)} keys with other shapes (e.g. {'; '.join(wrong[:2])})")
    looks = infer_arch(sd)
    hint = f"; they look like {looks}" if looks and looks != target else ""
    if looks is None:
        closest = _closest_arch(sd)
        if closest != target:
            hint = f"; closest architecture: {closest}"
        if any("rbr_reparam" in k for k in sd) and any("branch_3x3" in k for k in missing):
            hint += "; these look like fused (re-parameterised) weights: use the unfused ones"
    what = f"do not fit {arch}" if arch else "match no YOLO-NAS architecture (S, M or L)"
    return WeightsError(f"{path}: the weights {what}: {', '.join(parts)}{hint}")


def describe_checkpoint(path: Path, kind: str) -> ModelInfo:
    """`stages.detect.describe.describe` for a PyTorch checkpoint or safetensors file (``kind``
    as `sniff` says): arch and class count from the keys and shapes, without building it."""
    sd, info = read_weights(path)  # WeightsError (a ValueError) names the file and problem
    other = not_yolo_nas(path, list(sd))  # another network: no need to compare it with each arch
    if other is not None:
        raise other
    if CLS_KEY not in sd:
        raise _arch_error(path, sd, None)
    arch = info.arch if info.arch in ARCHS and not any(_mismatch(sd, info.arch)) else None
    arch = arch or infer_arch(sd)
    if arch is None:
        raise _arch_error(path, sd, None)
    n = int(sd[CLS_KEY].shape[0])
    names = info.class_names if len(info.class_names) == n else []
    fmt = "safetensors" if kind == "safetensors" else "torch"
    return ModelInfo(arch, n, names, info.input_hw, format=fmt, backend="torch")


def load_model(
    path: str | Path, arch: str | None = None, num_classes: int | None = None
) -> tuple[YoloNAS, ModelInfo]:
    """Build the model for the weights in ``path`` and load them (strict), in eval mode.

    arch: "yolo_nas_s" | "yolo_nas_m" | "yolo_nas_l"; inferred from the keys and shapes when
        None (or taken from the file when it says).
    num_classes: checked against the weights (the class head's shape) when given.
    Returns the unfused model (call ``.fuse()`` for inference) and the file's `ModelInfo`,
    with ``arch`` and ``num_classes`` filled in.
    """
    path = Path(path)
    if arch is not None and arch not in ARCHS:
        raise WeightsError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    sd, info = read_weights(path)
    if CLS_KEY not in sd:
        raise _arch_error(path, sd, arch)
    n_weights = int(sd[CLS_KEY].shape[0])
    if num_classes is not None and num_classes != n_weights:
        raise WeightsError(
            f"{path}: the weights have {n_weights} classes, the config asks for {num_classes}"
        )
    chosen = arch or infer_arch(sd)
    if chosen is None or any(_mismatch(sd, chosen)):
        raise _arch_error(path, sd, arch)
    if info.arch and info.arch != chosen:
        log.warning("%s: file says arch %s, its weights are %s", path, info.arch, chosen)
    model = ARCHS[chosen](num_classes=n_weights)
    model.load_state_dict(sd, strict=True)
    model.eval()
    if info.class_names and len(info.class_names) != n_weights:
        log.warning(
            "%s: %d class names for %d classes; ignoring the names",
            path,
            len(info.class_names),
            n_weights,
        )
        info.class_names = []
    info.arch, info.num_classes = chosen, n_weights
    return model, info


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@functools.cache
def _arch_spec(name: str) -> Any:
    with torch.device("meta"):
        return ARCHS[name](num_classes=1).arch


def arch_name(model: YoloNAS) -> str:
    """The `ARCHS` name of ``model``'s architecture."""
    for name in ARCHS:
        if _arch_spec(name) == model.arch:
            return name
    raise WeightsError("the model's architecture is not one of yolo_nas_s/m/l")


def processing_params(
    class_names: list[str], input_hw: tuple[int, int] = (640, 640)
) -> dict[str, Any]:
    """super-gradients ``processing_params`` (what its ``predict()`` needs), plain data only.

    The chain is the reference's ``default_yolo_nas_coco_processing_params``: rescale the
    longest side to the input size minus 4 px, centre-pad with 114, /255, HWC->CHW.
    """
    h, w = input_hw
    return {
        "class_names": list(class_names),
        "image_processor": {
            "ComposeProcessing": {
                "processings": [
                    {"DetectionLongestMaxSizeRescale": {"output_shape": [h - 4, w - 4]}},
                    {"DetectionCenterPadding": {"output_shape": [h, w], "pad_value": 114}},
                    {"StandardizeImage": {"max_value": 255.0}},
                    {"ImagePermute": {"permutation": [2, 0, 1]}},
                ]
            }
        },
        "iou": 0.7,
        "conf": 0.25,
    }


def save_checkpoint(
    model: YoloNAS,
    path: str | Path,
    class_names: list[str] | None = None,
    arch: str | None = None,
    input_hw: tuple[int, int] = (640, 640),
) -> Path:
    """Write ``model``'s weights so that super-gradients 3.7.1 and `load_model` read them.

    ``*.safetensors``: tensors plus string metadata (arch, class names, input size).
    Anything else: a super-gradients checkpoint dict ``{"net", "processing_params",
    "edgestream"}`` of plain data only, so it loads with ``torch.load(weights_only=True)``
    (the reference's own loader uses torch's default, which is weights_only since torch 2.6).
    No ``ema_net`` is written: the reference reads ``net`` unless asked for EMA, and a copy
    would double the file. Refuses a fused model, whose keys no longer match a checkpoint.
    """
    if getattr(model, "fused", False):
        raise WeightsError("cannot save a fused model: save before calling fuse()")
    path = Path(path)
    arch = arch or arch_name(model)
    names = list(class_names) if class_names is not None else []
    if names and len(names) != model.num_classes:
        raise WeightsError(f"{len(names)} class names for a {model.num_classes}-class model")
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        meta = {
            "format": _SAFETENSORS_FORMAT,
            "arch": arch,
            "class_names": json.dumps(names),
            "input_hw": json.dumps(list(input_hw)),
        }
        save_file(sd, str(path), metadata=meta)
        return path
    ckpt: dict[str, Any] = {
        "net": sd,
        "edgestream": {"arch": arch, "num_classes": model.num_classes, "input_hw": list(input_hw)},
    }
    if names:
        ckpt["processing_params"] = processing_params(names, input_hw)
    torch.save(ckpt, path)
    return path
