"""The DFL detection heads of YOLO-NAS and the box decoding.

Each head predicts, per feature-map cell, class logits and for each box side (left, top,
right, bottom) a distribution over ``reg_max + 1`` integer distances in stride units
(Distribution Focal Loss). The expected distance under the softmax is the decoded offset from
the cell centre; boxes are ``(centre - lt, centre + rb) * stride`` in input pixels.

Anchors (cell centres) depend only on the input size. In eager eval mode they are cached per
(height, width, device, dtype); while tracing (TorchScript / ONNX export) they are rebuilt from
the feature-map shapes with ``arange`` so the exporter sees shape arithmetic, not a baked-in
constant of the example input's size (it constant-folds them anyway when the size is static).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.detect.nn.blocks import ConvBNReLU


class RawOutputs(NamedTuple):
    """What a loss needs (training mode), in the order of the reference's raw predictions.

    cls_logits: (B, A, C) pre-sigmoid class scores.
    reg_distri: (B, A, 4 * (reg_max + 1)) pre-softmax distance distributions (l, t, r, b).
    anchors: (A, 4) xyxy anchor boxes of ``grid_cell_scale * stride`` side, input pixels.
    anchor_points: (A, 2) cell centres in input pixels.
    num_anchors_list: anchors per level.
    stride_tensor: (A, 1) stride of each anchor.
    """

    cls_logits: Tensor
    reg_distri: Tensor
    anchors: Tensor
    anchor_points: Tensor
    num_anchors_list: list[int]
    stride_tensor: Tensor


class DFLHead(nn.Module):
    """One level: shared 1x1 stem, then a 3x3 branch each for classes and distances."""

    def __init__(self, in_ch: int, inter_ch: int, num_classes: int, reg_max: int) -> None:
        super().__init__()
        self.stem = ConvBNReLU(in_ch, inter_ch, 1, 0)
        self.cls_convs = nn.Sequential(ConvBNReLU(inter_ch, inter_ch, 3, 1))
        self.reg_convs = nn.Sequential(ConvBNReLU(inter_ch, inter_ch, 3, 1))
        self.cls_pred = nn.Conv2d(inter_ch, num_classes, 1)
        self.reg_pred = nn.Conv2d(inter_ch, 4 * (reg_max + 1), 1)
        prior_prob = 1e-2  # start every class at p=0.01 so early training is not flooded
        assert self.cls_pred.bias is not None
        nn.init.constant_(self.cls_pred.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.stem(x)
        return self.reg_pred(self.reg_convs(x)), self.cls_pred(self.cls_convs(x))


def make_anchor_points(
    sizes: list[tuple[int, int]], strides: tuple[int, ...], offset: float, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Cell centres in stride units (A, 2) and per-anchor stride (A, 1), levels concatenated."""
    points, stride_list = [], []
    for (h, w), stride in zip(sizes, strides, strict=True):
        xs = torch.arange(w, dtype=torch.float32, device=device) + offset
        ys = torch.arange(h, dtype=torch.float32, device=device) + offset
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx, yy], dim=-1).reshape(-1, 2))
        stride_list.append(torch.full_like(xx.reshape(-1, 1), float(stride)))
    return torch.cat(points), torch.cat(stride_list)


class DFLHeads(nn.Module):
    """Three `DFLHead` levels (``head1..3``) plus decoding; the reference's ``NDFLHeads``."""

    def __init__(
        self,
        in_channels: tuple[int, ...],
        inter_channels: tuple[int, ...],
        num_classes: int,
        strides: tuple[int, ...],
        reg_max: int = 16,
        grid_cell_scale: float = 5.0,
        grid_cell_offset: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = strides
        self.grid_cell_scale = grid_cell_scale
        self.grid_cell_offset = grid_cell_offset
        proj = torch.linspace(0, reg_max, reg_max + 1).reshape(1, reg_max + 1, 1, 1)
        self.register_buffer("proj_conv", proj, persistent=False)
        self.proj_conv: Tensor
        for i, (c_in, c_mid) in enumerate(zip(in_channels, inter_channels, strict=True)):
            self.add_module(f"head{i + 1}", DFLHead(c_in, c_mid, num_classes, reg_max))
        self._anchor_cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def heads(self) -> list[DFLHead]:
        return [getattr(self, f"head{i + 1}") for i in range(len(self.strides))]

    def _anchors(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        sizes = [(f.shape[2], f.shape[3]) for f in feats]
        device = feats[0].device
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return make_anchor_points(sizes, self.strides, self.grid_cell_offset, device)
        key = (tuple(sizes), str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = make_anchor_points(
                sizes, self.strides, self.grid_cell_offset, device
            )
        return self._anchor_cache[key]

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor] | RawOutputs:
        cls_list, distri_list, dist_list = [], [], []
        for head, feat in zip(self.heads(), feats, strict=True):
            reg, cls = head(feat)
            # (B, 4*(R+1), H, W) -> (B, R+1, HW, 4): softmax over bins, dot with 0..R.
            bins = reg.flatten(2).reshape(reg.shape[0], 4, self.reg_max + 1, -1)
            probs = F.softmax(bins.permute(0, 2, 3, 1), dim=1)
            dist_list.append(F.conv2d(probs, self.proj_conv).squeeze(1))
            distri_list.append(reg.flatten(2).permute(0, 2, 1))
            cls_list.append(cls.flatten(2))
        cls_logits = torch.cat(cls_list, dim=-1).permute(0, 2, 1)  # (B, A, C)

        if self.training:
            return self._raw(feats, cls_logits, torch.cat(distri_list, dim=1))

        points, stride = self._anchors(feats)
        points, stride = points.to(cls_logits.dtype), stride.to(cls_logits.dtype)
        lt, rb = torch.cat(dist_list, dim=1).split(2, dim=-1)
        boxes = torch.cat([points - lt, rb + points], dim=-1) * stride
        return boxes, cls_logits.sigmoid()

    def _raw(self, feats: list[Tensor], cls_logits: Tensor, reg_distri: Tensor) -> RawOutputs:
        anchors, points, counts, strides = [], [], [], []
        for feat, stride in zip(feats, self.strides, strict=True):
            h, w = feat.shape[2], feat.shape[3]
            half = self.grid_cell_scale * stride * 0.5
            xs = (torch.arange(w, device=feat.device) + self.grid_cell_offset) * stride
            ys = (torch.arange(h, device=feat.device) + self.grid_cell_offset) * stride
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            box = torch.stack([xx - half, yy - half, xx + half, yy + half], dim=-1)
            anchors.append(box.reshape(-1, 4).to(feat.dtype))
            points.append(torch.stack([xx, yy], dim=-1).reshape(-1, 2).to(feat.dtype))
            counts.append(h * w)
            strides.append(torch.full((h * w, 1), float(stride), dtype=feat.dtype))
        return RawOutputs(
            cls_logits,
            reg_distri,
            torch.cat(anchors),
            torch.cat(points),
            counts,
            torch.cat(strides).to(feat.device),
        )
