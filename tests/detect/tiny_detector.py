"""A small conv 'detector' with YOLO-NAS's output contract, for tests that need fast exports.

``forward(x)`` returns (boxes (B, N, 4) xyxy in input pixels, scores (B, N, C) sigmoid), like
the real model in eval mode; seeded weights give a mix of scores above and below 0.25.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyDetector(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(16, 4 + num_classes, 3, 2, 1),
        )
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.rand(p.shape, generator=g) * 0.6 - 0.3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.body(x).flatten(2).transpose(1, 2)  # (B, N, 4 + C)
        xy = y[..., :2].sigmoid() * x.shape[-1]
        wh = y[..., 2:4].sigmoid() * 8 + 2
        return torch.cat([xy - wh, xy + wh], -1), y[..., 4:].sigmoid()
