"""A checkpoint's keys read without torch (`stages.detect.checkpoint_keys`): the same keys torch
reads, from real files torch wrote; nothing in the file runs; anything it cannot tell is left to
the torch reader. (That another network's weights are refused without importing torch:
test_describe.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from stages.detect.checkpoint_keys import not_yolo_nas, state_dict_keys
from stages.detect.model_files import sniff
from stages.detect.weights import read_weights

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "stages" / "detect" / "models" / "demo.pth"


def keys_of(path: Path) -> list[str] | None:
    return state_dict_keys(path, sniff(path))


def torch_keys(path: Path) -> list[str]:
    sd, _ = read_weights(path)
    return list(sd)


def test_the_shipped_yolo_nas_checkpoint_reads_as_torch_reads_it() -> None:
    keys = keys_of(DEMO)
    assert keys == torch_keys(DEMO)
    assert not_yolo_nas(DEMO, keys) is None  # a YOLO-NAS checkpoint goes on to torch


@pytest.mark.parametrize("layout", ["plain", "net", "ema_net over net", "module.", "parameters"])
def test_checkpoint_layouts_give_torch_s_keys(layout: str, tmp_path: Path) -> None:
    sd = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).state_dict()
    other = {k: v + 1 for k, v in torch.nn.Linear(2, 2).state_dict().items()}
    obj: object = {
        "plain": sd,
        "net": {"net": sd, "epoch": 3, "acc": 0.5},
        "ema_net over net": {"net": other, "ema_net": sd},
        "module.": {f"module.{k}": v for k, v in sd.items()},
        "parameters": {k: torch.nn.Parameter(v.float()) for k, v in sd.items()},
    }[layout]
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    keys = keys_of(path)
    assert keys == torch_keys(path) == list(sd)
    assert "match no YOLO-NAS architecture" in str(not_yolo_nas(path, keys))


def test_safetensors_keys(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file(torch.nn.Conv2d(3, 8, 3).state_dict(), str(path), metadata={"arch": "x"})
    assert sorted(keys_of(path) or []) == sorted(torch_keys(path)) == ["bias", "weight"]


class _Payload:
    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.target),))

    def __init__(self, target: Path) -> None:
        self.target = target


def test_nothing_in_the_file_runs(tmp_path: Path) -> None:
    target = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "hook": _Payload(target)}, path)
    assert keys_of(path) is None  # not a state_dict of tensors: the torch reader judges it
    torch.save({"net": torch.nn.Linear(2, 2).state_dict(), "hook": _Payload(target)}, path)
    assert keys_of(path) == ["weight", "bias"]
    assert not target.exists()


def test_what_it_cannot_tell_is_left_to_the_torch_reader(tmp_path: Path) -> None:
    weightless = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "acc": 0.5}, weightless)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(DEMO.read_bytes()[: DEMO.stat().st_size // 2])
    legacy = tmp_path / "legacy.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), legacy, _use_new_zipfile_serialization=False)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"PK\x03\x04" + os.urandom(200))
    for path in (weightless, cut, legacy, garbage):
        assert keys_of(path) is None, path
