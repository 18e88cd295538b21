"""A checkpoint's state_dict keys without torch: enough to refuse another network's weights.

`edgestream run --weights classifier.pth` must fail before anything starts, and fast; importing
torch alone takes ~1 s on a 2-core box. A PyTorch zip checkpoint is a zip holding a pickle
(``<name>/data.pkl``) whose tensors are persistent references to storages stored beside it, and
a safetensors file starts with a JSON header naming every tensor. So the keys can be read with
no torch at all: the pickle is read by an unpickler that resolves *no* global from the file —
torch's tensor rebuild functions become a bare tensor marker, every other class an inert
stand-in — so nothing in the file runs. This module decides only what it can decide exactly:
it returns the keys when the file holds a plain state_dict (or a checkpoint dict around one) of
tensors, and None whenever the full reader (`stages.detect.weights`, with torch) must judge.

One rule for where a checkpoint keeps its weights (`find_state_dict`) and one for what counts
as YOLO-NAS weights (`not_yolo_nas`), used by this fast path and by the torch reader alike.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from stages.detect.model_files import ModelFileError

STATE_DICT_KEYS = ("ema_net", "net", "state_dict", "model_state_dict")
"""Where a checkpoint dict keeps its weights, in order of preference (``ema_net``: the EMA
weights, which the reference's pretrained loader also prefers)."""

YOLO_NAS_PREFIXES = ("backbone.", "neck.", "heads.")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""DataParallel/DDP and torch.compile prefixes, stripped when on every key."""

_MAX_READ_BYTES = 64 << 20  # a pickle or safetensors header: keys and shapes, a few hundred KB


def find_state_dict(
    obj: Any, is_tensor: Callable[[Any], bool]
) -> tuple[str | None, Mapping[Any, Any]] | None:
    """(the key it sits under or None for the dict itself, the state_dict) in a loaded
    checkpoint, or None when it holds none. ``is_tensor`` says what a tensor is."""
    if not isinstance(obj, Mapping):
        return None

    def all_tensors(d: Mapping[Any, Any]) -> bool:
        return all(isinstance(k, str) and is_tensor(v) for k, v in d.items())

    for key in STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all_tensors(inner):
            return key, inner
    if obj and all_tensors(obj):
        return None, obj
    return None


def strip_wrappers(keys: list[str]) -> list[str]:
    """``keys`` without the wrapper prefixes found on every key (in `WRAPPER_PREFIXES` order),
    in the same order."""
    for prefix in WRAPPER_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            keys = [k[len(prefix) :] for k in keys]
    return keys


def not_yolo_nas(path: Path, keys: list[str]) -> ModelFileError | None:
    """The error for weights none of whose (stripped) keys is a YOLO-NAS key, else None."""
    if any(k.startswith(YOLO_NAS_PREFIXES) for k in keys):
        return None
    sample = ", ".join(keys[:3])
    return ModelFileError(
        f"{path}: the weights match no YOLO-NAS architecture: none of their keys is a "
        f"YOLO-NAS backbone/neck/heads key (e.g. {sample}); is this another network?"
    )


class _Tensor:
    """A tensor as the fast reader sees it: only that it is one (its storage is never read)."""


class _Inert:
    """Stand-in for any other global a pickle names: takes its arguments, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Dict(dict[Any, Any]):
    """collections.OrderedDict in a state_dict: a dict that also takes ``_metadata``."""


def _rebuild_tensor(*args: Any) -> _Tensor:
    return _Tensor()


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    # ``func`` came from `find_class` too: one of these stand-ins, never the file's own code
    return func(*args)


_KNOWN: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _Dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
}


class _KeysUnpickler(pickle.Unpickler):
    """Resolves no global from the file: the few torch rebuild functions map to tensor
    markers, everything else to `_Inert`. Storages (persistent ids) are never loaded."""

    def find_class(self, module: str, name: str) -> Any:
        return _KNOWN.get((module, name), _Inert)

    def persistent_load(self, pid: Any) -> Any:
        return None


def _zip_pickle(path: Path) -> bytes | None:
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1 or z.getinfo(names[0]).file_size > _MAX_READ_BYTES:
                return None
            return z.read(names[0])
    except (zipfile.BadZipFile, OSError, KeyError, ValueError):
        return None  # truncated or odd: the full reader says what is wrong


def _safetensors_keys(path: Path) -> list[str] | None:
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > _MAX_READ_BYTES:
                return None
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    return [k for k in header if k != "__metadata__"]


def state_dict_keys(path: Path, kind: str) -> list[str] | None:
    """The state_dict keys of a ``torch-zip`` or ``safetensors`` file (``kind`` as `sniff`
    says), wrapper prefixes stripped; None when only the torch reader can tell."""
    if kind == "safetensors":
        keys = _safetensors_keys(path)
    elif kind == "torch-zip":
        data = _zip_pickle(path)
        if data is None:
            return None
        try:
            obj = _KeysUnpickler(io.BytesIO(data)).load()
        except Exception:  # any malformed pickle: the torch reader words the error
            return None
        found = find_state_dict(obj, lambda v: isinstance(v, _Tensor))
        keys = [str(k) for k in found[1]] if found else None
    else:
        return None
    return strip_wrappers(keys) if keys else None
