"""The training loop: YOLO-NAS from scratch or fine-tuned, EMA, cosine LR, periodic mAP.

`train(TrainConfig)` is all there is: it loads the dataset, builds (or resumes, or initialises
from a checkpoint) the model, and writes super-gradients style checkpoints into ``output``:
``ckpt_latest.pth`` after every epoch, ``ckpt_best.pth`` at the best validation mAP@0.5:0.95,
each a dict ``{"net", "ema_net", "optimizer_state_dict", "epoch", "acc", "processing_params",
"edgestream", ...}`` of plain data (readable with ``torch.load(weights_only=True)``) that
`stages.detect.weights.load_model` loads strictly (EMA weights first).

Determinism: the same seed, thread count and data give the same weights (augmentations draw
from ``(seed, epoch, index)``; torch runs with deterministic algorithms where it has them).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stages.detect.nn import ARCHS, YoloNAS
from stages.detect.preprocess import resize_to_for
from stages.detect.train.data import (
    Augment,
    DetectionData,
    TrainDataset,
    collate,
    load_dataset,
    worker_init,
)
from stages.detect.train.evaluate import Metrics, evaluate
from stages.detect.train.loss import YoloNASLoss
from stages.detect.types import ModelInfo
from stages.detect.weights import CLS_KEY, processing_params, read_weights

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """One training run.

    data / val: a YOLO ``data.yaml``, or a COCO train JSON with ``val`` its val JSON.
    arch: an `ARCHS` name; ``yolo_nas_n`` is the CPU-sized one.
    imgsz: square input side (multiple of 32). Smaller is quadratically faster and loses
        small objects.
    batch: images per step. lr: peak learning rate (AdamW 2e-3 suits from-scratch training
        of small models at batch 16; fine-tuning wants ~2e-4).
    warmup_steps: linear LR warmup from lr * 1e-3; cosine decay to ``lr * final_lr_ratio``.
    ema_decay: EMA of the weights with the reference's "threshold" warmup
        ``min(decay, (1 + step) / (10 + step))``; evaluation and the best checkpoint use it.
    init: a checkpoint to start from (fine-tuning); class layers are re-initialised when its
        class count differs. resume: continue ``output/ckpt_latest.pth`` (or the given file).
    eval_every: epochs between validation runs (the last epoch is always evaluated);
        eval_images caps the images used by the periodic ones (0: all).
    time_schedule: lay the cosine out over ``max_minutes`` as well as over the steps
        (whichever ends first): for a fixed time budget on a machine of unknown speed, at the
        price of bit-for-bit reproducibility when the time bound is the one that binds.
    train_hw: a training canvas (h, w) other than the square inference input, e.g. 224x320
        for 5:3 video frames: the images are placed at the inference scale, so the network
        sees objects at the size it will see them at, without computing on the padding bands
        of a square letterbox (~30% faster for 640x384 frames). Validation uses the real input.
    cache: keep decoded, letterbox-scaled training images in memory (decode once).
    max_minutes: stop (validate, save) once this much wall time has passed (0: no limit), a
        safety net: the schedule is laid out in steps (``epochs`` or ``max_steps``), so a run
        cut short by it ends before its learning rate has decayed.
    """

    data: str
    output: str = "runs/train"
    val: str | None = None
    arch: str = "yolo_nas_n"
    imgsz: int = 320
    epochs: int = 30
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-5
    optimizer: str = "adamw"
    warmup_steps: int = 300
    final_lr_ratio: float = 0.05
    ema_decay: float = 0.9997
    workers: int = 1
    threads: int = 0
    seed: int = 0
    init: str | None = None
    resume: str | None = None
    eval_every: int = 1
    eval_images: int = 0
    max_minutes: float = 0.0
    max_steps: int = 0
    train_hw: tuple[int, int] | None = None
    cache: bool = False
    time_schedule: bool = False
    augment: Augment = field(default_factory=Augment)
    progress: bool = True


@dataclass
class EpochResult:
    epoch: int
    loss: float
    cls: float
    iou: float
    dfl: float
    lr: float
    seconds: float
    metrics: Metrics | None = None


@dataclass
class TrainResult:
    best: Path
    latest: Path
    epochs: list[EpochResult]
    class_names: list[str]
    wall_seconds: float


# --------------------------------------------------------------------------------------------
# EMA and schedule
# --------------------------------------------------------------------------------------------


class ModelEMA:
    """Exponential moving average of a model's weights (float buffers averaged too, integer
    ones copied), with the reference's threshold warmup so early weights fade quickly."""

    def __init__(self, model: nn.Module, decay: float = 0.9997, updates: int = 0) -> None:
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = updates

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


def lr_at(step: int, total: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warmup to ``cfg.lr`` then cosine to ``cfg.lr * cfg.final_lr_ratio``.

    time_fraction: share of the wall-clock budget used; the cosine follows whichever of the
    step and time fractions is further along (``cfg.time_schedule``), so a run that the
    budget cuts short still ends with a decayed learning rate.
    """
    warm = min(cfg.warmup_steps, max(total - 1, 0))
    if step < warm:
        return cfg.lr * (1e-3 + (1 - 1e-3) * step / max(warm, 1))
    t = max((step - warm) / max(total - warm, 1), time_fraction)
    floor = cfg.lr * cfg.final_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on conv/linear weights only (not on biases or BatchNorm), as the reference."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer must be adamw or sgd, got {cfg.optimizer!r}")


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def checkpoint_dict(
    model: YoloNAS,
    ema: ModelEMA | None,
    arch: str,
    class_names: list[str],
    input_hw: tuple[int, int],
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    metrics: Metrics | None = None,
    config: TrainConfig | None = None,
    half: bool = False,
) -> dict[str, Any]:
    """A super-gradients style checkpoint of plain data. ``half``: float tensors in FP16
    (halves the file; the loader casts them back)."""

    def sd(m: nn.Module) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in m.state_dict().items():
            v = v.detach().cpu().clone()
            out[k] = v.half() if half and v.dtype.is_floating_point else v
        return out

    ckpt: dict[str, Any] = {
        "net": sd(model),
        "epoch": epoch,
        "acc": metrics.map50_95 if metrics else None,
        "processing_params": processing_params(class_names, input_hw),
        "edgestream": {
            "arch": arch,
            "num_classes": model.num_classes,
            "input_hw": list(input_hw),
            "class_names": list(class_names),
            "metrics": asdict(metrics) if metrics else None,
            "config": _plain_config(config) if config else None,
        },
    }
    if ema is not None:
        ckpt["ema_net"] = sd(ema.ema)
        ckpt["edgestream"]["ema_updates"] = ema.updates
    if optimizer is not None:
        ckpt["optimizer_state_dict"] = optimizer.state_dict()
    return ckpt


def _plain_config(cfg: TrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    return json.loads(json.dumps(d))


def export_weights(checkpoint: str | Path, output: str | Path, half: bool = True) -> Path:
    """A deployable file from a training checkpoint: the EMA weights alone, stored as
    ``net`` (what super-gradients' loader reads), FP16 when ``half``; no optimizer state."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights = ckpt.get("ema_net") or ckpt["net"]
    out = {
        "net": {
            k: (v.half() if half and v.dtype.is_floating_point else v) for k, v in weights.items()
        },
        "epoch": ckpt.get("epoch"),
        "acc": ckpt.get("acc"),
        "processing_params": ckpt.get("processing_params"),
        "edgestream": {**ckpt.get("edgestream", {}), "weights": "ema"},
    }
    out["edgestream"].pop("ema_updates", None)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, output)
    return output


def init_from(model: YoloNAS, path: str | Path) -> list[str]:
    """Load a checkpoint's weights into ``model`` for fine-tuning. Class-count dependent
    layers (``cls_pred``) are kept freshly initialised when the counts differ. Returns the
    re-initialised keys (empty when everything was loaded)."""
    sd, _ = read_weights(path)
    own = model.state_dict()
    skipped = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if skipped and not all(".cls_pred." in k for k in skipped):
        bad = [k for k in skipped if ".cls_pred." not in k]
        raise ValueError(
            f"{path}: does not fit {model.arch}: {len(bad)} keys with other shapes "
            f"(e.g. {bad[0]} {tuple(sd[bad[0]].shape)} != {tuple(own[bad[0]].shape)})"
        )
    load = {k: v for k, v in sd.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(load, strict=False)
    if unexpected or [k for k in missing if k not in skipped]:
        raise ValueError(
            f"{path}: does not fit this architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return skipped


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def train(
    cfg: TrainConfig,
    data: DetectionData | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> TrainResult:
    """Run ``cfg``; returns where the checkpoints went and what each epoch did."""
    t_start = time.perf_counter()
    if cfg.imgsz % 32:
        raise ValueError(f"imgsz must be a multiple of 32, got {cfg.imgsz}")
    if cfg.time_schedule and cfg.max_minutes <= 0:
        raise ValueError("time_schedule needs max_minutes > 0")
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown arch {cfg.arch!r}; choose one of {', '.join(ARCHS)}")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    data = data or load_dataset(cfg.data, cfg.val)
    data.split("train"), data.split("val")  # both needed: a clear error when one is missing
    names = data.class_names
    input_hw = (cfg.imgsz, cfg.imgsz)
    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)

    model = ARCHS[cfg.arch](num_classes=len(names))
    ema = ModelEMA(model, cfg.ema_decay)
    optimizer = make_optimizer(model, cfg)
    start_epoch, best = 0, -1.0
    if cfg.resume:
        start_epoch, best = _resume(cfg, model, ema, optimizer, names)
    elif cfg.init:
        reinit = init_from(model, cfg.init)
        if reinit:
            log.warning(
                "%s: class layers re-initialised (%d classes here, %d in the checkpoint): %s",
                cfg.init,
                len(names),
                int(read_weights(cfg.init)[0][CLS_KEY].shape[0]),
                ", ".join(sorted({k.rsplit(".", 1)[0] for k in reinit})),
            )
        else:
            log.info("%s: all weights loaded", cfg.init)
        ema = ModelEMA(model, cfg.ema_decay)

    train_hw = tuple(cfg.train_hw) if cfg.train_hw else input_hw
    if train_hw[0] % 32 or train_hw[1] % 32:
        raise ValueError(f"train_hw must be multiples of 32, got {train_hw}")
    dataset = TrainDataset(
        data.train, (train_hw[0], train_hw[1]), resize_to_for(input_hw), cfg.augment, cfg.seed,
        cache=cfg.cache,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch,
        shuffle=True,
        num_workers=cfg.workers,
        collate_fn=collate,
        drop_last=len(dataset) > cfg.batch,
        worker_init_fn=worker_init,
        generator=gen,
        persistent_workers=False,
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    loss_fn = YoloNASLoss(len(names), reg_max=model.arch.reg_max)
    info = ModelInfo(arch=cfg.arch, num_classes=len(names), class_names=names, input_hw=input_hw)
    best_path, latest_path = out_dir / "ckpt_best.pth", out_dir / "ckpt_latest.pth"
    history: list[EpochResult] = []
    step = start_epoch * steps_per_epoch

    for epoch in range(start_epoch, cfg.epochs):
        if cfg.max_steps and step >= cfg.max_steps:
            break
        t_epoch = time.perf_counter()
        dataset.epoch = epoch
        gen.manual_seed(cfg.seed * 100003 + epoch)
        model.train()
        sums = np.zeros(4)
        seen = 0
        bar = _progress(loader, epoch, cfg)
        for images, targets in bar:
            elapsed = (time.perf_counter() - t_start) / 60
            time_fraction = elapsed / cfg.max_minutes if cfg.time_schedule else 0.0
            lr = lr_at(step, total_steps, cfg, time_fraction)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x = images.float().div_(255.0)
            parts = loss_fn(model(x), targets)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            ema.update(model)
            step += 1
            seen += 1
            sums += [float(parts.total.detach()), parts.cls, parts.iou, parts.dfl]
            if hasattr(bar, "set_postfix"):
                avg = sums / seen
                bar.set_postfix(
                    loss=f"{avg[0]:.3f}", cls=f"{avg[1]:.3f}", iou=f"{avg[2]:.3f}",
                    dfl=f"{avg[3]:.3f}", lr=f"{lr:.2e}",
                )  # fmt: skip
            if cfg.max_steps and step >= cfg.max_steps:
                break
            if cfg.max_minutes and (time.perf_counter() - t_start) / 60 >= cfg.max_minutes:
                break  # mid-epoch: the budget is wall time, not whole epochs
        avg = sums / max(seen, 1)
        last = epoch == cfg.epochs - 1 or bool(cfg.max_steps and step >= cfg.max_steps)
        out_of_time = bool(
            cfg.max_minutes and (time.perf_counter() - t_start) / 60 >= cfg.max_minutes
        )
        metrics = None
        if (epoch + 1) % max(cfg.eval_every, 1) == 0 or last or out_of_time:
            val = data.val
            if cfg.eval_images and not (last or out_of_time) and cfg.eval_images < len(val):
                val = val[:: -(-len(val) // cfg.eval_images)]  # spread over the whole split
            metrics = evaluate(ema.ema, val, info)
        result = EpochResult(
            epoch, avg[0], avg[1], avg[2], avg[3], lr, time.perf_counter() - t_epoch, metrics
        )
        history.append(result)
        ckpt = checkpoint_dict(
            model, ema, cfg.arch, names, input_hw, epoch, optimizer, metrics, cfg
        )
        ckpt["edgestream"]["best_map"] = max(best, metrics.map50_95 if metrics else -1.0)
        torch.save(ckpt, latest_path)
        if metrics is not None and metrics.map50_95 >= best:
            best = metrics.map50_95
            torch.save(ckpt, best_path)
        elif not best_path.exists():
            torch.save(ckpt, best_path)
        log.info(
            "epoch %d/%d: loss %.4f (cls %.4f iou %.4f dfl %.4f) lr %.2e %.0f s%s",
            epoch + 1, cfg.epochs, avg[0], avg[1], avg[2], avg[3], lr, result.seconds,
            f"; {metrics}" if metrics else "",
        )  # fmt: skip
        if on_epoch:
            on_epoch(result)
        if out_of_time and not last:
            log.warning(
                "stopping in epoch %d at step %d of %d: --max-minutes %.0f reached",
                epoch + 1, step, total_steps, cfg.max_minutes,
            )  # fmt: skip
            break
    return TrainResult(best_path, latest_path, history, names, time.perf_counter() - t_start)


def _resume(
    cfg: TrainConfig,
    model: YoloNAS,
    ema: ModelEMA,
    optimizer: torch.optim.Optimizer,
    names: list[str],
) -> tuple[int, float]:
    path = Path(cfg.output) if cfg.resume in (None, "", "latest") else Path(cfg.resume)
    if path.is_dir():
        path = path / "ckpt_latest.pth"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    meta = ckpt.get("edgestream", {})
    if meta.get("class_names") and meta["class_names"] != names:
        raise ValueError(f"{path}: trained on classes {meta['class_names']}, the data has {names}")
    model.load_state_dict(ckpt["net"], strict=True)
    ema.ema.load_state_dict(ckpt["ema_net"], strict=True)
    ema.updates = int(meta.get("ema_updates", 0))
    if "optimizer_state_dict" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])
    best = float(meta.get("best_map", -1.0) or -1.0)
    log.info("resuming from %s after epoch %d", path, int(ckpt["epoch"]) + 1)
    return int(ckpt["epoch"]) + 1, best


def _progress(loader: Any, epoch: int, cfg: TrainConfig) -> Any:
    if not cfg.progress:
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=True, dynamic_ncols=True)
