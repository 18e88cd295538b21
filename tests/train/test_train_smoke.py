"""A few training steps on a tiny generated dataset: the loss falls, the checkpoint reloads
strictly through the ordinary loader and detects through `Detector`; resume, fine-tune,
export and determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from toy_data import NAMES, write_yolo

from stages.detect.backends.torch_backend import TorchBackend
from stages.detect.detector import Detector
from stages.detect.nn import yolo_nas_n
from stages.detect.train.data import NO_AUGMENT, load_dataset, read_rgb
from stages.detect.train.trainer import TrainConfig, export_weights, init_from, lr_at, train
from stages.detect.weights import load_model


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(data), output=str(out), arch="yolo_nas_n", imgsz=96, epochs=12, batch=8,
        lr=5e-3, eval_every=4, warmup_steps=2, workers=0, threads=1, seed=1, augment=NO_AUGMENT,
        progress=False,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_yolo(tmp_path_factory.mktemp("toy"), n_train=16, n_val=4)


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run")
    return out, train(_cfg(dataset, out))


def test_loss_decreases_and_checkpoint_loads_strictly(dataset: Path, trained) -> None:
    _out, result = trained
    losses = [e.loss for e in result.epochs]
    assert len(losses) == 12
    # The loss first rises: its targets are the IoU-aware alignment scores, tiny while the
    # predicted boxes are poor, and grow as they improve; then it falls well below its peak.
    assert losses[-1] < losses[0], losses
    assert losses[-1] < 0.75 * max(losses), losses
    assert [e.epoch for e in result.epochs if e.metrics is not None] == [3, 7, 11]
    ckpt = torch.load(result.best, map_location="cpu", weights_only=True)
    assert {"net", "ema_net", "optimizer_state_dict", "epoch", "processing_params"} <= set(ckpt)
    model, info = load_model(result.latest)  # strict; prefers ema_net
    assert info.arch == "yolo_nas_n" and info.num_classes == 3
    assert info.class_names == NAMES and info.input_hw == (96, 96)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["ema_net"][k]) or torch.equal(
            v, torch.load(result.latest, weights_only=True)["ema_net"][k]
        )
    data = load_dataset(dataset)
    detector = Detector(TorchBackend(model, info=info, max_batch=2))
    dets = detector.detect([read_rgb(s.path) for s in data.val[:2]])
    assert len(dets) == 2 and all(d.boxes.shape[1] == 4 for d in dets)


def test_resume_continues_from_the_latest_epoch(dataset: Path, trained, tmp_path: Path) -> None:
    out, _result = trained
    more = train(_cfg(dataset, out, epochs=13, resume="latest"))
    assert [e.epoch for e in more.epochs] == [12]


def test_fine_tune_reinitialises_class_layers(trained) -> None:
    _, result = trained
    model = yolo_nas_n(num_classes=5)
    before = model.heads.head1.cls_pred.weight.clone()
    reinit = init_from(model, result.best)
    assert sorted(reinit) == sorted(
        f"heads.head{i}.cls_pred.{p}" for i in (1, 2, 3) for p in ("weight", "bias")
    )
    assert torch.equal(model.heads.head1.cls_pred.weight, before)
    src = torch.load(result.best, weights_only=True)["ema_net"]
    assert torch.equal(model.heads.head1.reg_pred.weight, src["heads.head1.reg_pred.weight"])
    same = yolo_nas_n(num_classes=3)
    assert init_from(same, result.best) == []


def test_export_is_fp16_ema_and_loads(trained, tmp_path: Path) -> None:
    _, result = trained
    path = export_weights(result.best, tmp_path / "demo.pth")
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) >= {"net", "processing_params"} and "ema_net" not in ckpt
    assert "optimizer_state_dict" not in ckpt
    assert ckpt["net"]["heads.head1.cls_pred.weight"].dtype == torch.float16
    half, info = load_model(path)
    full, _ = load_model(result.best)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        _b16, s16 = half(x)
        _b32, s32 = full(x)
    assert info.input_hw == (96, 96)
    assert float((s16 - s32).abs().max()) < 1e-2


def test_same_seed_same_weights(dataset: Path, tmp_path: Path) -> None:
    a = train(_cfg(dataset, tmp_path / "a", epochs=1, max_steps=2, eval_every=99))
    b = train(_cfg(dataset, tmp_path / "b", epochs=1, max_steps=2, eval_every=99))
    sa = torch.load(a.latest, weights_only=True)["net"]
    sb = torch.load(b.latest, weights_only=True)["net"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not np.isnan(a.epochs[0].loss)


def test_schedule_warmup_cosine_and_time_budget() -> None:
    cfg = TrainConfig(data="x", lr=1e-3, warmup_steps=10, final_lr_ratio=0.1, max_minutes=10)
    assert lr_at(0, 110, cfg) == pytest.approx(1e-6)
    assert lr_at(10, 110, cfg) == pytest.approx(1e-3)
    assert lr_at(60, 110, cfg) == pytest.approx(0.55e-3)
    assert lr_at(110, 110, cfg) == pytest.approx(1e-4)
    # the time budget, when further along than the steps, drives the cosine
    assert lr_at(20, 110, cfg, time_fraction=1.0) == pytest.approx(1e-4)
    assert lr_at(60, 110, cfg, time_fraction=0.1) == pytest.approx(0.55e-3)
    with pytest.raises(ValueError, match="max_minutes"):
        train(TrainConfig(data="x", time_schedule=True))


def test_cli_evaluates_a_checkpoint(
    dataset: Path, trained, capsys: pytest.CaptureFixture[str]
) -> None:
    from stages.detect.train.cli import main

    _, result = trained
    code = main(["train", "--data", str(dataset), "--evaluate", str(result.best), "--threads", "1"])
    assert code == 0
    assert "mAP@0.5=" in capsys.readouterr().out
    assert (
        main(["train", "--data", str(dataset), "--evaluate", str(result.best), "--split", "test"])
        == 2
    )
    assert "no 'test' split" in capsys.readouterr().err
