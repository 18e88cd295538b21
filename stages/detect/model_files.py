"""What every reader of weights files shares: the error that names a bad file, and the first
look at a file (`sniff`). A leaf module: `describe` and `weights` both build on it, and neither
needs the other to say what a file is.
"""

from __future__ import annotations

from pathlib import Path


class ModelFileError(ValueError):
    """A weights file that cannot be used; the message starts with the file's path."""


def sniff(path: Path) -> str:
    """The file's kind from its first bytes: ``torch-zip``, ``torch-legacy``,
    ``safetensors``, ``json``, ``onnx?`` (a protobuf that may be ONNX) or ``unknown``.
    Raises `ModelFileError` for an empty file."""
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        raise ModelFileError(f"{path}: the file is empty")
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{":  # u64 header length, then the JSON header
        return "safetensors"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ModelProto field 1: ir_version
        return "onnx?"
    return "unknown"
