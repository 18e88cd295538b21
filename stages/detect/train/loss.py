"""YOLO-NAS training loss: super-gradients' ``PPYoloELoss`` as the YOLO-NAS recipes use it.

* assignment: task-aligned (TAL, TOOD): each ground truth takes the ``topk`` anchors inside it
  with the best ``score**alpha * IoU**beta``; an anchor claimed by several takes the one it
  overlaps most. The soft target of a positive is its alignment, normalised per ground truth
  so that its best anchor's target equals that anchor's IoU.
* classification: varifocal loss (BCE weighted ``alpha * p**gamma`` on negatives, by the
  target on positives), summed and divided by the sum of the targets.
* boxes: GIoU loss and distribution focal loss (DFL) on positives, each weighted by the
  positive's target score, divided by the same sum.
* total = 1.0 * cls + 2.5 * iou + 0.5 * dfl (the YOLO-NAS weights).

Shapes: B images, A anchors, C classes, n ground truths per image (padded; ``pad_mask``
marks the real ones), R = reg_max. Boxes are xyxy; the assigner works in input pixels, the
box losses in stride units, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from stages.detect.nn.head import RawOutputs

EPS = 1e-9


# --------------------------------------------------------------------------------------------
# Box geometry
# --------------------------------------------------------------------------------------------


def pairwise_iou(a: Tensor, b: Tensor, eps: float = EPS) -> Tensor:
    """IoU of every box in a (B, n, 4) against every box in b (B, m, 4): (B, n, m)."""
    a, b = a.unsqueeze(2), b.unsqueeze(1)
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter + eps)


def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-10) -> Tensor:
    """1 - GIoU of matching rows of (N, 4) xyxy boxes: 0 for identical boxes, in [0, 2)."""
    x1, y1, x2, y2 = pred.unbind(-1)
    x1g, y1g, x2g, y2g = target.unbind(-1)
    xk1, yk1 = torch.maximum(x1, x1g), torch.maximum(y1, y1g)
    xk2, yk2 = torch.minimum(x2, x2g), torch.minimum(y2, y2g)
    inter = (xk2 - xk1).clamp(min=0) * (yk2 - yk1).clamp(min=0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter + eps
    iou = inter / union
    xc1, yc1 = torch.minimum(x1, x1g), torch.minimum(y1, y1g)
    xc2, yc2 = torch.maximum(x2, x2g), torch.maximum(y2, y2g)
    enclosing = (xc2 - xc1) * (yc2 - yc1) + eps
    return 1 - (iou - (enclosing - union) / enclosing)


def distance_to_box(points: Tensor, ltrb: Tensor) -> Tensor:
    """(..., 2) points and (..., 4) left/top/right/bottom distances -> xyxy boxes."""
    lt, rb = ltrb.split(2, dim=-1)
    return torch.cat([points - lt, points + rb], dim=-1)


def box_to_distance(points: Tensor, boxes: Tensor, reg_max: int) -> Tensor:
    """xyxy boxes -> distances from ``points``, clipped to [0, reg_max - 0.01] (DFL range)."""
    lt = points - boxes[..., :2]
    rb = boxes[..., 2:] - points
    return torch.cat([lt, rb], dim=-1).clamp(0, reg_max - 0.01)


# --------------------------------------------------------------------------------------------
# Task-aligned assignment
# --------------------------------------------------------------------------------------------


@dataclass
class Assignment:
    """Per anchor: class (``num_classes`` = background), target box (input px), and soft
    class targets (B, A, C) that are zero except at a positive's class."""

    labels: Tensor
    boxes: Tensor
    scores: Tensor


def points_inside(points: Tensor, boxes: Tensor, eps: float = EPS) -> Tensor:
    """(A, 2) points inside (B, n, 4) boxes, strictly: (B, n, A) bool."""
    x, y = points[:, 0], points[:, 1]
    l_ = x - boxes[..., 0:1]
    t = y - boxes[..., 1:2]
    r = boxes[..., 2:3] - x
    b = boxes[..., 3:4] - y
    return torch.stack([l_, t, r, b], -1).amin(-1) > eps


def _topk_mask(metrics: Tensor, topk: int, valid: Tensor) -> Tensor:
    """(B, n, A) mask of each row's ``topk`` largest entries; rows of padded gts are empty."""
    topk = min(topk, metrics.shape[-1])
    idx = metrics.topk(topk, dim=-1).indices
    mask = torch.zeros_like(metrics).scatter_(-1, idx, 1.0)
    return mask * valid.to(metrics.dtype)


class TaskAlignedAssigner:
    """TOOD's assigner with the reference's defaults (topk=13, alpha=1, beta=6)."""

    def __init__(self, topk: int = 13, alpha: float = 1.0, beta: float = 6.0) -> None:
        self.topk, self.alpha, self.beta = topk, alpha, beta

    @torch.no_grad()
    def __call__(
        self,
        pred_scores: Tensor,
        pred_boxes: Tensor,
        anchor_points: Tensor,
        gt_labels: Tensor,
        gt_boxes: Tensor,
        pad_mask: Tensor,
        num_classes: int,
    ) -> Assignment:
        """pred_scores (B, A, C) after sigmoid; pred_boxes (B, A, 4) and gt_boxes (B, n, 4)
        in input px; anchor_points (A, 2) px; gt_labels (B, n) int64; pad_mask (B, n) bool."""
        b, a, c = pred_scores.shape
        n = gt_boxes.shape[1]
        if n == 0:
            return Assignment(
                torch.full((b, a), num_classes, dtype=torch.long, device=pred_scores.device),
                torch.zeros((b, a, 4), device=pred_scores.device),
                torch.zeros((b, a, c), device=pred_scores.device),
            )
        ious = pairwise_iou(gt_boxes, pred_boxes)  # (B, n, A)
        cls_scores = pred_scores.permute(0, 2, 1).gather(
            1, gt_labels.clamp(0, c - 1).unsqueeze(-1).expand(b, n, a)
        )  # (B, n, A): each gt's class score at every anchor
        metrics = cls_scores.pow(self.alpha) * ious.pow(self.beta)
        inside = points_inside(anchor_points, gt_boxes).to(metrics.dtype)
        valid = pad_mask.unsqueeze(-1)
        positive = _topk_mask(metrics * inside, self.topk, valid) * inside * valid
        # An anchor claimed by several ground truths keeps the one it overlaps most.
        n_claims = positive.sum(1)  # (B, A)
        if n_claims.max() > 1:
            best_iou = F.one_hot(ious.argmax(1), n).permute(0, 2, 1).to(positive.dtype)
            positive = torch.where((n_claims > 1).unsqueeze(1), best_iou, positive)
            n_claims = positive.sum(1)
        gt_index = positive.argmax(1)  # (B, A)
        labels = gt_labels.gather(1, gt_index)
        labels = torch.where(n_claims > 0, labels, torch.full_like(labels, num_classes))
        boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(b, a, 4))
        scores = F.one_hot(labels, num_classes + 1)[..., :num_classes].to(pred_scores.dtype)
        metrics = metrics * positive
        best_metric = metrics.amax(-1, keepdim=True)
        best_iou_per_gt = (ious * positive).amax(-1, keepdim=True)
        norm = (metrics / (best_metric + EPS) * best_iou_per_gt).amax(1)  # (B, A)
        return Assignment(labels, boxes, scores * norm.unsqueeze(-1))


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def varifocal_loss(
    logits: Tensor, target: Tensor, label: Tensor, alpha: float = 0.75, gamma: float = 2.0
) -> Tensor:
    """Summed varifocal loss: negatives weighted ``alpha * p**gamma``, positives by their
    (IoU-aware) target. ``label`` is the one-hot positive mask of the same shape."""
    p = logits.sigmoid()
    weight = alpha * p.pow(gamma) * (1 - label) + target * label
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * weight).sum()  # the weight is not detached, as in the reference


def dfl_loss(pred_dist: Tensor, target: Tensor) -> Tensor:
    """Distribution focal loss: (N, 4, R+1) logits, (N, 4) target distances in bins.

    The target t lies between bins floor(t) and floor(t)+1; the loss is cross-entropy
    against the two-bin distribution with weights (floor(t)+1-t, t-floor(t)), averaged over
    the four sides: (N, 1).
    """
    left = target.long()
    right = left + 1
    w_left = right.to(target.dtype) - target
    w_right = 1 - w_left
    bins = pred_dist.shape[-1]
    ce_left = F.cross_entropy(pred_dist.reshape(-1, bins), left.reshape(-1), reduction="none")
    ce_right = F.cross_entropy(
        pred_dist.reshape(-1, bins), right.clamp(max=bins - 1).reshape(-1), reduction="none"
    )
    loss = ce_left.view(left.shape) * w_left + ce_right.view(left.shape) * w_right
    return loss.mean(-1, keepdim=True)


@dataclass
class LossParts:
    """Total (for backward) and its detached components (for logging)."""

    total: Tensor
    cls: float
    iou: float
    dfl: float


class YoloNASLoss:
    """``PPYoloELoss(use_varifocal_loss=True, reg_max=16)`` with the YOLO-NAS weights.

    targets: (M, 6) rows ``[image_index, class, x1, y1, x2, y2]`` in input pixels.
    """

    def __init__(
        self,
        num_classes: int,
        reg_max: int = 16,
        cls_weight: float = 1.0,
        iou_weight: float = 2.5,
        dfl_weight: float = 0.5,
        assigner: TaskAlignedAssigner | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.cls_weight, self.iou_weight, self.dfl_weight = cls_weight, iou_weight, dfl_weight
        self.assigner = assigner or TaskAlignedAssigner()
        self.proj = torch.arange(reg_max + 1, dtype=torch.float32)

    def decode(self, points_s: Tensor, reg_distri: Tensor) -> Tensor:
        """(A, 2) points and (B, A, 4*(R+1)) logits -> (B, A, 4) boxes, all in stride units."""
        b, a, _ = reg_distri.shape
        probs = reg_distri.view(b, a, 4, self.reg_max + 1).softmax(-1)
        return distance_to_box(points_s, probs @ self.proj.to(probs))

    def __call__(self, out: RawOutputs, targets: Tensor) -> LossParts:
        cls_logits, reg_distri = out.cls_logits.float(), out.reg_distri.float()
        stride = out.stride_tensor.to(cls_logits)
        points = out.anchor_points.to(cls_logits)
        points_s = points / stride
        b = cls_logits.shape[0]
        gt_labels, gt_boxes, pad_mask = pad_targets(targets, b)
        pred_boxes = self.decode(points_s, reg_distri)  # stride units
        assigned = self.assigner(
            cls_logits.detach().sigmoid(),
            pred_boxes.detach() * stride,
            points,
            gt_labels.to(cls_logits.device),
            gt_boxes.to(cls_logits),
            pad_mask.to(cls_logits.device),
            self.num_classes,
        )
        target_boxes = assigned.boxes / stride
        one_hot = F.one_hot(assigned.labels, self.num_classes + 1)[..., : self.num_classes]
        loss_cls = varifocal_loss(cls_logits, assigned.scores, one_hot.to(cls_logits.dtype))
        score_sum = assigned.scores.sum().clamp(min=1.0)
        loss_cls = loss_cls / score_sum

        positive = assigned.labels != self.num_classes
        if positive.any():
            weight = assigned.scores.sum(-1)[positive].unsqueeze(-1)
            loss_iou = (
                giou_loss(pred_boxes[positive], target_boxes[positive]).unsqueeze(-1) * weight
            ).sum() / score_sum
            ltrb = box_to_distance(points_s.expand(b, -1, -1), target_boxes, self.reg_max)
            dist = reg_distri[positive].view(-1, 4, self.reg_max + 1)
            loss_dfl = (dfl_loss(dist, ltrb[positive]) * weight).sum() / score_sum
        else:
            loss_iou = loss_dfl = reg_distri.sum() * 0.0
        total = self.cls_weight * loss_cls + self.iou_weight * loss_iou + self.dfl_weight * loss_dfl
        return LossParts(
            total, float(loss_cls.detach()), float(loss_iou.detach()), float(loss_dfl.detach())
        )


def pad_targets(targets: Tensor, batch: int) -> tuple[Tensor, Tensor, Tensor]:
    """(M, 6) ``[image, class, x1, y1, x2, y2]`` -> labels (B, n) int64, boxes (B, n, 4),
    mask (B, n) bool, n = the most boxes in one image (0 when there are none)."""
    image = targets[:, 0].long()
    counts = torch.bincount(image, minlength=batch) if len(targets) else torch.zeros(batch)
    n = int(counts.max()) if len(targets) else 0
    labels = torch.zeros((batch, n), dtype=torch.long)
    boxes = torch.zeros((batch, n, 4), dtype=torch.float32)
    mask = torch.zeros((batch, n), dtype=torch.bool)
    for i in range(batch):
        rows = targets[image == i]
        k = rows.shape[0]
        labels[i, :k] = rows[:, 1].long()
        boxes[i, :k] = rows[:, 2:6]
        mask[i, :k] = True
    return labels, boxes, mask
