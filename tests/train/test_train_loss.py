"""Loss and assigner units with hand-checkable answers."""

from __future__ import annotations

import math

import pytest
import torch

from stages.detect.nn import yolo_nas_n
from stages.detect.train.loss import (
    TaskAlignedAssigner,
    YoloNASLoss,
    box_to_distance,
    dfl_loss,
    giou_loss,
    pad_targets,
    pairwise_iou,
    varifocal_loss,
)


def test_giou_properties() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert giou_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    # half overlap: IoU = 50/150, enclosing = union -> GIoU = IoU
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0]])
    assert giou_loss(a, b).item() == pytest.approx(1 - 50 / 150, abs=1e-6)
    assert giou_loss(a, b).item() == pytest.approx(giou_loss(b, a).item())
    # disjoint: IoU 0, enclosing 20x10=200, union 200 -> 1; farther apart -> closer to 2
    c = torch.tensor([[10.0, 0.0, 20.0, 10.0]])
    far = torch.tensor([[90.0, 0.0, 100.0, 10.0]])
    assert giou_loss(a, c).item() == pytest.approx(1.0, abs=1e-6)
    assert 1.0 < giou_loss(a, far).item() < 2.0
    assert giou_loss(a, far).item() == pytest.approx(2 - 200 / 1000, abs=1e-6)


def test_pairwise_iou() -> None:
    a = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    b = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0]]])
    iou = pairwise_iou(a, b)[0, 0]
    assert iou.tolist() == pytest.approx([1.0, 25 / 175, 0.0], abs=1e-6)


def test_dfl_target_distribution() -> None:
    """Target 3.3 bins: the loss is the cross-entropy against 0.7 at bin 3 and 0.3 at bin 4,
    smallest (the target's entropy) when the prediction is that distribution."""
    reg_max = 16
    target = torch.full((1, 4), 3.3)
    probs = torch.full((reg_max + 1,), 1e-12)
    probs[3], probs[4] = 0.7, 0.3
    exact = probs.log().expand(1, 4, -1)
    entropy = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    assert dfl_loss(exact, target).item() == pytest.approx(entropy, abs=1e-4)
    for other in ([0.5, 0.5], [0.9, 0.1], [0.3, 0.7]):
        p = torch.full((reg_max + 1,), 1e-12)
        p[3], p[4] = other
        assert dfl_loss(p.log().expand(1, 4, -1), target).item() > entropy + 1e-3
    # an integer target is a one-hot distribution: ~zero loss when predicted exactly
    onehot = torch.full((1, 4, reg_max + 1), -30.0)
    onehot[..., 5] = 30.0
    assert dfl_loss(onehot, torch.full((1, 4), 5.0)).item() < 1e-6


def test_box_to_distance_clips_to_reg_max() -> None:
    points = torch.tensor([[10.0, 10.0]])
    d = box_to_distance(points, torch.tensor([[8.0, 6.0, 40.0, 11.0]]), reg_max=16)
    assert d[0].tolist() == pytest.approx([2.0, 4.0, 15.99, 1.0])


def test_varifocal_weights() -> None:
    """Negatives count alpha * p**gamma of their BCE; positives their target score."""
    logits = torch.tensor([[0.0, 2.0]])
    target = torch.tensor([[0.0, 0.8]])
    label = torch.tensor([[0.0, 1.0]])
    p0 = 0.5
    neg = 0.75 * p0**2 * -math.log(1 - p0)
    p1 = 1 / (1 + math.exp(-2.0))
    pos = 0.8 * -(0.8 * math.log(p1) + 0.2 * math.log(1 - p1))
    assert varifocal_loss(logits, target, label).item() == pytest.approx(neg + pos, rel=1e-5)


def _grid_points(size: int, stride: int) -> torch.Tensor:
    c = (torch.arange(size // stride) + 0.5) * stride
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2)


def test_tal_assigns_inside_anchors_of_the_right_class() -> None:
    points = _grid_points(64, 8)  # 8x8 anchors
    a = points.shape[0]
    gt = torch.tensor([[[8.0, 8.0, 40.0, 40.0]]])  # 4x4 anchor centres inside
    pred_boxes = gt.expand(1, a, 4).clone()  # every anchor predicts the gt box
    scores = torch.full((1, a, 3), 0.1)
    out = TaskAlignedAssigner(topk=13)(
        scores, pred_boxes, points, torch.tensor([[2]]), gt, torch.tensor([[True]]), 3
    )
    inside = (points[:, 0] > 8) & (points[:, 0] < 40) & (points[:, 1] > 8) & (points[:, 1] < 40)
    positive = out.labels[0] != 3
    assert int(positive.sum()) == 13  # top-k of the 16 inside anchors
    assert bool((positive & ~inside).sum() == 0)
    assert set(out.labels[0][positive].tolist()) == {2}
    assert torch.allclose(out.boxes[0][positive], gt[0, 0].expand(13, 4))
    # targets only in the gt's class column; best anchor's target = its IoU (1.0 here)
    assert out.scores[0][:, [0, 1]].abs().sum() == 0
    assert out.scores[0][:, 2].max().item() == pytest.approx(1.0, abs=1e-5)
    assert out.scores[0][~positive].abs().sum() == 0


def test_tal_anchor_shared_by_two_gts_goes_to_the_better_overlap() -> None:
    points = torch.tensor([[20.0, 20.0]])
    gts = torch.tensor([[[0.0, 0.0, 40.0, 40.0], [10.0, 10.0, 30.0, 30.0]]])
    pred = torch.tensor([[[9.0, 9.0, 31.0, 31.0]]])  # overlaps the second gt more
    scores = torch.full((1, 1, 2), 0.5)
    out = TaskAlignedAssigner(topk=1)(
        scores, pred, points, torch.tensor([[0, 1]]), gts, torch.tensor([[True, True]]), 2
    )
    assert out.labels.tolist() == [[1]]
    assert torch.allclose(out.boxes[0, 0], gts[0, 1])


def test_tal_ignores_padding_and_handles_no_gts() -> None:
    points = _grid_points(32, 8)
    a = points.shape[0]
    gt = torch.tensor([[[0.0, 0.0, 32.0, 32.0]]])
    out = TaskAlignedAssigner()(
        torch.full((1, a, 2), 0.5), gt.expand(1, a, 4), points,
        torch.tensor([[1]]), gt, torch.tensor([[False]]), 2,
    )  # fmt: skip
    assert (out.labels == 2).all() and out.scores.sum() == 0
    empty = TaskAlignedAssigner()(
        torch.rand(2, a, 2), torch.rand(2, a, 4), points,
        torch.zeros((2, 0), dtype=torch.long), torch.zeros((2, 0, 4)),
        torch.zeros((2, 0), dtype=torch.bool), 2,
    )  # fmt: skip
    assert (empty.labels == 2).all() and empty.boxes.shape == (2, a, 4)


def test_pad_targets() -> None:
    t = torch.tensor([[0, 1, 1, 2, 3, 4], [2, 0, 5, 6, 7, 8], [2, 1, 1, 1, 2, 2.0]])
    labels, boxes, mask = pad_targets(t, 3)
    assert labels.shape == (3, 2) and mask.tolist() == [[True, False], [False, False], [True, True]]
    assert boxes[2, 1].tolist() == [1, 1, 2, 2]


def _perfect_logits(raw, gt: torch.Tensor, cls: int, reg_max: int = 16):
    """Class logits +8 inside the box (-8 elsewhere), distance distributions that decode
    exactly to the gt box at every anchor (two-bin interpolation, as DFL targets)."""
    points, stride = raw.anchor_points, raw.stride_tensor
    a = points.shape[0]
    inside = (
        (points[:, 0] > gt[0])
        & (points[:, 0] < gt[2])
        & (points[:, 1] > gt[1])
        & (points[:, 1] < gt[3])
    )
    logits = torch.full((1, a, raw.cls_logits.shape[-1]), -8.0)
    logits[0, inside, cls] = 8.0
    ltrb = box_to_distance(points / stride, gt.expand(a, 4) / stride, reg_max)  # (A, 4)
    left = ltrb.floor().long()
    w_right = ltrb - left
    probs = torch.full((a, 4, reg_max + 1), 1e-9)
    probs.scatter_(-1, left.unsqueeze(-1), (1 - w_right).unsqueeze(-1).clamp(min=1e-9))
    probs.scatter_(
        -1, (left + 1).clamp(max=reg_max).unsqueeze(-1), w_right.unsqueeze(-1).clamp(min=1e-9)
    )
    return logits, probs.log().reshape(1, a, 4 * (reg_max + 1))


def test_perfect_prediction_has_low_loss() -> None:
    torch.manual_seed(0)
    model = yolo_nas_n(num_classes=2).train()
    raw = model(torch.rand(1, 3, 128, 128))
    gt = torch.tensor([24.0, 32.0, 88.0, 100.0])
    targets = torch.tensor([[0, 1, *gt.tolist()]])
    loss = YoloNASLoss(num_classes=2)
    random_parts = loss(raw, targets)
    cls, dist = _perfect_logits(raw, gt, 1)
    # the class scores the assigner asks for, exactly: 1 at its positives, 0 elsewhere
    pts_s = raw.anchor_points / raw.stride_tensor
    assigned = loss.assigner(
        cls.sigmoid(), loss.decode(pts_s, dist) * raw.stride_tensor, raw.anchor_points,
        torch.tensor([[1]]), gt.view(1, 1, 4), torch.tensor([[True]]), 2,
    )  # fmt: skip
    assert assigned.scores.max().item() == pytest.approx(1.0, abs=1e-4)
    cls = torch.logit(assigned.scores.clamp(1e-4, 1 - 1e-4))
    perfect = loss(raw._replace(cls_logits=cls, reg_distri=dist), targets)
    assert perfect.iou < 1e-3
    assert perfect.cls < 0.05
    assert perfect.total.item() < 0.25 * random_parts.total.item()
    assert random_parts.iou > 0.1
    random_parts.total.backward()  # the loss is differentiable end to end
    assert model.heads.head1.cls_pred.weight.grad is not None
