"""YOLO-NAS S / M / L: backbone (stem, 4 stages, SPP), PAN neck, DFL heads.

A model variant is a function and its architecture a frozen dataclass (`YoloNASArch`); the
numbers are those of super-gradients 3.7.1's ``yolo_nas_{s,m,l}_arch_params.yaml`` and module
names follow its ``state_dict`` layout, so its checkpoints load with ``strict=True``.

Eval mode: ``model(x)`` with x float32 (B, 3, H, W) RGB in [0, 1], H and W multiples of 32,
returns ``(boxes (B, A, 4) xyxy input pixels, scores (B, A, C) after sigmoid)`` with
A = H*W/64 + H*W/256 + H*W/1024 (8400 at 640x640). Training mode returns `RawOutputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from stages.detect.nn.blocks import (
    SPP,
    Conv,
    ConvBNReLU,
    CSPLayer,
    QARepVGGBlock,
    conv3x3_block,
    qarepvgg_block,
)
from stages.detect.nn.head import DFLHeads, RawOutputs


@dataclass(frozen=True)
class StageSpec:
    """One CSP stage: output channels, bottleneck count, bottleneck width, and whether the
    CSP concatenates every bottleneck output (wider, more accurate, slower)."""

    out_channels: int
    num_blocks: int
    hidden_channels: int
    concat_intermediates: bool = False


@dataclass(frozen=True)
class YoloNASArch:
    """Everything that differs between variants (and the few things that do not)."""

    stages: tuple[StageSpec, StageSpec, StageSpec, StageSpec]
    neck: tuple[StageSpec, StageSpec, StageSpec, StageSpec]  # up1, up2, down1, down2
    head_width_mult: float
    stem_channels: int = 48
    spp_channels: int = 768
    spp_kernels: tuple[int, ...] = (5, 9, 13)
    head_inter_channels: tuple[int, int, int] = (128, 256, 512)
    strides: tuple[int, int, int] = (8, 16, 32)
    reg_max: int = 16
    bn_eps: float = 1e-3
    bn_momentum: float = 0.03


S = StageSpec
YOLO_NAS_S = YoloNASArch(
    stages=(S(96, 2, 32), S(192, 3, 64), S(384, 5, 96), S(768, 2, 192)),
    neck=(S(192, 2, 64), S(96, 2, 48), S(192, 2, 64), S(384, 2, 64)),
    head_width_mult=0.5,
)
YOLO_NAS_M = YoloNASArch(
    stages=(S(96, 2, 64, True), S(192, 3, 128, True), S(384, 5, 256, True), S(768, 2, 384)),
    neck=(S(192, 2, 192), S(96, 3, 64), S(192, 2, 192), S(384, 3, 256)),
    head_width_mult=0.75,
)
YOLO_NAS_L = YoloNASArch(
    stages=(
        S(96, 2, 96, True),
        S(192, 3, 128, True),
        S(384, 5, 256, True),
        S(768, 2, 512, True),
    ),
    neck=(S(192, 4, 128), S(96, 4, 128), S(192, 4, 128), S(384, 4, 256)),
    head_width_mult=1.0,
)
YOLO_NAS_N = YoloNASArch(
    stages=(S(32, 1, 16), S(64, 2, 32), S(128, 2, 48), S(256, 1, 64)),
    neck=(S(64, 1, 32), S(32, 1, 16), S(64, 1, 32), S(128, 1, 32)),
    head_width_mult=0.5,
    stem_channels=16,
    spp_channels=256,
    head_inter_channels=(64, 128, 256),
)
"""edgestream's own CPU variant (not in super-gradients): S's layout at about a third of its
width and half its depth, for small class sets trained from scratch on a CPU."""
del S


class Stem(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = QARepVGGBlock(in_ch, out_ch, stride=2, use_residual_connection=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Stage(nn.Module):
    """Stride-2 QARepVGG downsample, then a CSP layer of QARepVGG bottlenecks."""

    def __init__(self, in_ch: int, spec: StageSpec) -> None:
        super().__init__()
        out = spec.out_channels
        self.downsample = QARepVGGBlock(in_ch, out, stride=2, use_residual_connection=False)
        self.blocks = CSPLayer(
            out, out, spec.num_blocks, spec.hidden_channels, qarepvgg_block,
            spec.concat_intermediates,
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class Backbone(nn.Module):
    """Returns the outputs of stage1, stage2, stage3 and the SPP context module."""

    def __init__(self, arch: YoloNASArch, in_ch: int = 3) -> None:
        super().__init__()
        s1, s2, s3, s4 = arch.stages
        self.stem = Stem(in_ch, arch.stem_channels)
        self.stage1 = Stage(arch.stem_channels, s1)
        self.stage2 = Stage(s1.out_channels, s2)
        self.stage3 = Stage(s2.out_channels, s3)
        self.stage4 = Stage(s3.out_channels, s4)
        self.context_module = SPP(s4.out_channels, arch.spp_channels, arch.spp_kernels)

    def forward(self, x: Tensor) -> list[Tensor]:
        c2 = self.stage1(self.stem(x))
        c3 = self.stage2(c2)
        c4 = self.stage3(c3)
        return [c2, c3, c4, self.context_module(self.stage4(c4))]


class UpStage(nn.Module):
    """Top-down PAN step with two skips: reduce x, upsample it (transposed conv), concat with
    the same-scale skip and a stride-2 conv of the finer skip, reduce, CSP.

    Returns ``(x after reduction, before upsampling; stage output)``: the first feeds the
    matching bottom-up step.
    """

    def __init__(self, in_ch: int, skip1_ch: int, skip2_ch: int, spec: StageSpec) -> None:
        super().__init__()
        out = spec.out_channels
        self.reduce_skip1 = Conv(skip1_ch, out)
        self.reduce_skip2 = Conv(skip2_ch, out)
        self.conv = Conv(in_ch, out)
        self.upsample = nn.ConvTranspose2d(out, out, kernel_size=2, stride=2)
        self.downsample = Conv(out, out, 3, 2)
        self.reduce_after_concat = Conv(3 * out, out)
        self.blocks = CSPLayer(out, out, spec.num_blocks, spec.hidden_channels, qarepvgg_block)

    def forward(self, x: Tensor, skip1: Tensor, skip2: Tensor) -> tuple[Tensor, Tensor]:
        skip1 = self.reduce_skip1(skip1)
        skip2 = self.downsample(self.reduce_skip2(skip2))
        x_inter = self.conv(x)
        x = self.reduce_after_concat(torch.cat([self.upsample(x_inter), skip1, skip2], 1))
        return x_inter, self.blocks(x)


class DownStage(nn.Module):
    """Bottom-up PAN step: stride-2 3x3 conv to half the output width, concat the skip, CSP
    of plain 3x3 conv bottlenecks."""

    def __init__(self, in_ch: int, skip_ch: int, spec: StageSpec) -> None:
        super().__init__()
        out = spec.out_channels
        self.conv = Conv(in_ch, out // 2, 3, 2)
        self.blocks = CSPLayer(
            out // 2 + skip_ch, out, spec.num_blocks, spec.hidden_channels, conv3x3_block
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.blocks(torch.cat([self.conv(x), skip], 1))


class Neck(nn.Module):
    """PAN with two up-stages (each also taking the next finer backbone map) and two
    down-stages; returns P3, P4, P5 (strides 8, 16, 32)."""

    def __init__(self, arch: YoloNASArch) -> None:
        super().__init__()
        c2, c3, c4 = (s.out_channels for s in arch.stages[:3])
        c5 = arch.spp_channels
        up1, up2, down1, down2 = arch.neck
        self.neck1 = UpStage(c5, c4, c3, up1)
        self.neck2 = UpStage(up1.out_channels, c3, c2, up2)
        self.neck3 = DownStage(up2.out_channels, up2.out_channels, down1)
        self.neck4 = DownStage(down1.out_channels, up1.out_channels, down2)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        c2, c3, c4, c5 = feats
        n1_inter, x = self.neck1(c5, c4, c3)
        n2_inter, p3 = self.neck2(x, c3, c2)
        p4 = self.neck3(p3, n2_inter)
        p5 = self.neck4(p4, n1_inter)
        return [p3, p4, p5]


def _head_width(channels: int, mult: float) -> int:
    """The reference's ``width_multiplier(c, mult, divisor=8)``: scale, round up to 8."""
    return -(-int(channels * mult) // 8) * 8


class YoloNAS(nn.Module):
    """The detector. Build it with `yolo_nas_s` / `yolo_nas_m` / `yolo_nas_l`."""

    def __init__(self, arch: YoloNASArch, num_classes: int = 80) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.arch = arch
        self.num_classes = num_classes
        self.backbone = Backbone(arch)
        self.neck = Neck(arch)
        up2, down1, down2 = arch.neck[1:]
        widths = tuple(_head_width(c, arch.head_width_mult) for c in arch.head_inter_channels)
        self.heads = DFLHeads(
            in_channels=(up2.out_channels, down1.out_channels, down2.out_channels),
            inter_channels=widths,
            num_classes=num_classes,
            strides=arch.strides,
            reg_max=arch.reg_max,
        )
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = arch.bn_eps, arch.bn_momentum
        self.fused = False

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor] | RawOutputs:
        return self.heads(self.neck(self.backbone(x)))

    def fuse(self, fold_batchnorm: bool = False) -> YoloNAS:
        """Re-parameterise for inference, in place; returns self.

        Merges every QARepVGG block's 3x3, 1x1 and identity branches into one 3x3 conv, with
        the reference's arithmetic: the result is bit-identical to super-gradients'
        ``prep_model_for_conversion`` (measured: 0.0 difference for S, M and L).

        fold_batchnorm: also fold every BatchNorm into the conv before it: one op fewer per
            layer in eager PyTorch (ONNX export folds them anyway), at the price of no longer
            matching the reference bit for bit. Either way the fused model differs from the
            unfused one by float32 rounding amplified through ~100 layers: up to ~0.1 px on
            boxes, ~1e-4 on scores (the reference's own fusion shows the same); in float64 the
            difference is < 1e-6 px.

        The fused model cannot be trained and its state_dict no longer matches a checkpoint:
        load weights first, then fuse.
        """
        for m in self.modules():
            if isinstance(m, (QARepVGGBlock, Conv, ConvBNReLU)):
                m.fuse(fold_batchnorm)
        self.fused = True
        return self


def yolo_nas_s(num_classes: int = 80) -> YoloNAS:
    """YOLO-NAS S: 921 state_dict keys; 19.1 M parameters as built, 12.2 M once fused."""
    return YoloNAS(YOLO_NAS_S, num_classes)


def yolo_nas_m(num_classes: int = 80) -> YoloNAS:
    """YOLO-NAS M: 965 state_dict keys; 51.2 M parameters as built, 31.9 M once fused."""
    return YoloNAS(YOLO_NAS_M, num_classes)


def yolo_nas_l(num_classes: int = 80) -> YoloNAS:
    """YOLO-NAS L: 1097 state_dict keys; 67.0 M parameters as built, 42.0 M once fused."""
    return YoloNAS(YOLO_NAS_L, num_classes)


def yolo_nas_n(num_classes: int = 80) -> YoloNAS:
    """YOLO-NAS N (edgestream's, no reference weights): 2.2 M parameters as built; forward +
    backward ~14 images/s at 320x320 on two idle CPU cores. Same modules and key names as
    S/M/L, so the loader, export and backends treat it like them."""
    return YoloNAS(YOLO_NAS_N, num_classes)


ARCHS = {
    "yolo_nas_s": yolo_nas_s,
    "yolo_nas_m": yolo_nas_m,
    "yolo_nas_l": yolo_nas_l,
    "yolo_nas_n": yolo_nas_n,
}
"""Name → constructor, for the CLI and for weights files that name their architecture."""
