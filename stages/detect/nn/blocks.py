"""Building blocks of YOLO-NAS: conv-BN-act, QARepVGG, CSP layers and SPP.

Every attribute name here is chosen to reproduce the ``state_dict`` keys of super-gradients
3.7.1 (``conv``/``bn``/``act`` for ``Conv``, ``seq.conv``/``seq.bn`` for ``ConvBNReLU``,
``branch_3x3``/``branch_1x1``/``post_bn``/``rbr_reparam`` for ``QARepVGGBlock`` ...), so an
official or fine-tuned checkpoint loads with ``strict=True``. Renaming an attribute breaks
checkpoint compatibility.

Re-parameterisation (`fuse`) happens in place and is one-way: branches are merged into one
3x3 kernel and, by default, every BatchNorm is folded into the convolution before it. The
result is a plain conv-ReLU network that is faster and exports to a smaller graph, but can no
longer be trained.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BlockFactory = Callable[[int, int], nn.Module]
"""Makes the block used inside a bottleneck from (in_channels, out_channels)."""


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(A, b) with ``bn(y) == A * y + b`` per channel in eval mode.

    The operation order is the reference's ``QARepVGGBlock._fuse_bn_tensor`` on purpose:
    float32 fusion is only exact to rounding, and the same order gives bit-identical fused
    weights, so our fused model matches the reference's fused model exactly rather than to
    ~0.1 px (the size of float32 fused-vs-unfused noise through ~100 layers).
    """
    assert bn.running_mean is not None and bn.running_var is not None
    std = torch.sqrt(bn.running_var + bn.eps)
    return bn.weight / std, bn.bias - bn.weight * bn.running_mean / std


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new conv (with bias) computing ``bn(conv(x))`` in eval mode."""
    scale, shift = bn_scale_shift(bn)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        conv.groups,
        bias=True,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    assert fused.bias is not None
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(bias * scale + shift)
    return fused


class Conv(nn.Module):
    """Conv (no bias, 'same' padding) → BatchNorm → activation; super-gradients' ``Conv``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self, fold_batchnorm: bool = False) -> None:
        if fold_batchnorm and isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fold_bn(self.conv, self.bn)
            self.bn = nn.Identity()


class ConvBNReLU(nn.Module):
    """Same maths as `Conv`, stored under ``seq.{conv,bn,act}`` as in the reference heads."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, padding: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_ch, out_ch, kernel, 1, padding, bias=False),
                bn=nn.BatchNorm2d(out_ch),
                act=nn.ReLU(inplace=True),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)

    def fuse(self, fold_batchnorm: bool = False) -> None:
        if fold_batchnorm and isinstance(self.seq.bn, nn.BatchNorm2d):
            self.seq.conv = fold_bn(cast(nn.Conv2d, self.seq.conv), self.seq.bn)
            self.seq.bn = nn.Identity()


class QARepVGGBlock(nn.Module):
    """QARepVGG (S4) block, "Make RepVGG Greater Again" (arXiv 2212.01593).

    Training form: ``ReLU(post_bn(BN(conv3x3(x)) + alpha * conv1x1(x) + [x]))``. The identity
    branch exists only with ``use_residual_connection`` (needs in == out and stride 1); the
    learnable ``alpha`` only with ``use_alpha`` (YOLO-NAS never sets it, alpha is then 1.0).
    ``rbr_reparam`` is allocated up front, as in the reference, so its (unused) weights are
    part of the state_dict; `fuse` overwrites it with the merged kernel.

    `fuse` merges the three branches into ``rbr_reparam`` (the reference's "partial fusion",
    what its ``prep_model_for_conversion`` does) and with ``fold_batchnorm`` also folds
    ``post_bn`` into it (the reference's "full fusion").
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        use_residual_connection: bool = True,
        use_alpha: bool = False,
    ) -> None:
        super().__init__()
        if use_residual_connection and (in_ch != out_ch or stride != 1):
            raise ValueError("a QARepVGG identity branch needs in == out channels and stride 1")
        self.in_channels = in_ch
        self.out_channels = out_ch
        self.use_residual_connection = use_residual_connection
        self.nonlinearity = nn.ReLU(inplace=True)
        self.branch_3x3: nn.Sequential | None = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
                bn=nn.BatchNorm2d(out_ch),
            )
        )
        self.branch_1x1: nn.Conv2d | None = nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=True)
        self.alpha: nn.Parameter | float = (
            # The reference adds N(0, 0.01) noise so ONNX simplifiers keep the multiply.
            nn.Parameter(torch.tensor([1.0]) + 0.01 * torch.randn(1)) if use_alpha else 1.0
        )
        self.post_bn: nn.Module = nn.BatchNorm2d(out_ch)
        self.rbr_reparam = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=True)
        self.fused = False

    def forward(self, x: Tensor) -> Tensor:
        if self.branch_3x3 is None or self.branch_1x1 is None:
            return self.nonlinearity(self.post_bn(self.rbr_reparam(x)))
        y = self.branch_3x3(x) + self.alpha * self.branch_1x1(x)
        if self.use_residual_connection:
            y = y + x
        return self.nonlinearity(self.post_bn(y))

    @torch.no_grad()
    def fuse(self, fold_batchnorm: bool = False) -> None:
        if self.branch_3x3 is not None and self.branch_1x1 is not None:
            conv3 = cast(nn.Conv2d, self.branch_3x3.conv)
            scale, shift = bn_scale_shift(cast(nn.BatchNorm2d, self.branch_3x3.bn))
            kernel = conv3.weight * scale.reshape(-1, 1, 1, 1)
            alpha = float(self.alpha)  # the merged kernel is constant: alpha stops training
            kernel = kernel + alpha * F.pad(self.branch_1x1.weight, [1, 1, 1, 1])
            bias = shift
            if self.branch_1x1.bias is not None:
                bias = bias + alpha * self.branch_1x1.bias
            if self.use_residual_connection:
                idx = torch.arange(self.in_channels, device=kernel.device)
                kernel[idx, idx, 1, 1] += 1.0
            self.rbr_reparam.weight.copy_(kernel)
            assert self.rbr_reparam.bias is not None
            self.rbr_reparam.bias.copy_(bias)
            self.branch_3x3 = None
            self.branch_1x1 = None
            self.alpha = alpha
            self.fused = True
        if fold_batchnorm and isinstance(self.post_bn, nn.BatchNorm2d):
            self.rbr_reparam = fold_bn(self.rbr_reparam, self.post_bn)
            self.post_bn = nn.Identity()


class Bottleneck(nn.Module):
    """Two blocks and a residual scaled by a learnable ``alpha`` (YOLO-NAS always has it)."""

    def __init__(self, channels: int, make_block: BlockFactory) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor([1.0]))
        self.cv1 = make_block(channels, channels)
        self.cv2 = make_block(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.alpha * x + self.cv2(self.cv1(x))


class CSPLayer(nn.Module):
    """Cross-stage-partial layer: two 1x1 projections, a chain of bottlenecks on one of them,
    concat, 1x1 out.

    ``concat_intermediates`` concatenates every bottleneck's output (and its input), not just
    the last one: more channels into ``conv3`` (M and L use it), more memory traffic.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        num_bottlenecks: int,
        hidden_ch: int,
        make_block: BlockFactory,
        concat_intermediates: bool = False,
    ) -> None:
        super().__init__()
        self.concat_intermediates = concat_intermediates
        n_cat = 2 + (num_bottlenecks if concat_intermediates else 0)
        self.conv1 = Conv(in_ch, hidden_ch)
        self.conv2 = Conv(in_ch, hidden_ch)
        self.conv3 = Conv(hidden_ch * n_cat, out_ch)
        self.bottlenecks = nn.Sequential(
            *(Bottleneck(hidden_ch, make_block) for _ in range(num_bottlenecks))
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(x)
        parts = [y]
        for block in self.bottlenecks:
            y = block(y)
            parts.append(y)
        if not self.concat_intermediates:
            parts = [y]
        return self.conv3(torch.cat([*parts, self.conv2(x)], dim=1))


class SPP(nn.Module):
    """Spatial pyramid pooling: 1x1 halve, max-pools at several kernel sizes, concat, 1x1."""

    def __init__(self, in_ch: int, out_ch: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        hidden = in_ch // 2
        self.cv1 = Conv(in_ch, hidden)
        self.cv2 = Conv(hidden * (len(kernels) + 1), out_ch)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x, *(pool(x) for pool in self.m)], dim=1))


def qarepvgg_block(in_ch: int, out_ch: int) -> nn.Module:
    """Bottleneck block of the backbone stages and up-stages (with identity branch)."""
    return QARepVGGBlock(in_ch, out_ch)


def conv3x3_block(in_ch: int, out_ch: int) -> nn.Module:
    """Bottleneck block of the down-stages: a plain 3x3 Conv-BN-ReLU."""
    return Conv(in_ch, out_ch, 3)
