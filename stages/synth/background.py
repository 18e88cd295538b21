"""Scene backgrounds: sky or wall, buildings, grass, a road with lane marks, static occluders,
plus the per-frame photometric effects (lighting, sensor noise, blur)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from stages.synth.sprites import Circle, Ellipse, Line, Prim


@dataclass(frozen=True)
class Layout:
    """Where the ground is: objects walk/drive below ``horizon_y``; cars keep to the road."""

    horizon_y: float
    road_y0: float
    road_y1: float


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.standard_normal((max(2, h // cell), max(2, w // cell))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _texture(
    rng: np.random.Generator, h: int, w: int, colour: np.ndarray, amp: float
) -> np.ndarray:
    n = 0.6 * _smooth_noise(rng, h, w, 32) + 0.3 * _smooth_noise(rng, h, w, 6)
    n += 0.25 * rng.standard_normal((h, w)).astype(np.float32)
    return colour[None, None, :] * (1.0 + amp * n[..., None])


def make_background(
    rng: np.random.Generator, width: int, height: int
) -> tuple[np.ndarray, Layout, list[Prim]]:
    """A textured RGB background, its layout, and static occluders drawn over the objects."""
    h, w = height, width
    horizon = int(h * rng.uniform(0.22, 0.42))
    img = np.zeros((h, w, 3), np.float32)
    # sky / far wall: vertical gradient with texture
    top = rng.uniform([90, 120, 160], [170, 200, 250]).astype(np.float32)
    if rng.random() < 0.35:  # a wall or hillside instead of sky
        top = rng.uniform([80, 70, 60], [180, 170, 150]).astype(np.float32)
    grad = np.linspace(0.8, 1.1, horizon, dtype=np.float32)[:, None, None]
    img[:horizon] = _texture(rng, horizon, w, top, 0.08) * grad
    # buildings / trees along the horizon
    x = 0.0
    while x < w:
        bw = rng.uniform(30, 140)
        bh = rng.uniform(0.2, 0.9) * horizon
        col = rng.uniform(50, 200, 3)
        y0 = int(horizon - bh)
        x0, x1 = int(x), min(w, int(x + bw))
        if x1 > x0 and horizon > y0:
            img[y0:horizon, x0:x1] = _texture(
                rng, horizon - y0, x1 - x0, col.astype(np.float32), 0.1
            )
        for _ in range(int(bw * bh / 600)):  # windows
            wx, wy = rng.uniform(x + 3, x + bw - 8), rng.uniform(y0 + 3, horizon - 8)
            img[int(wy) : int(wy) + 5, int(wx) : int(wx) + 4] = col * rng.uniform(0.4, 1.4)
        x += bw + rng.uniform(0, 40)
    # ground: grass or pavement
    gh = h - horizon
    ground_col = (
        rng.uniform([60, 110, 40], [110, 170, 80])
        if rng.random() < 0.6
        else rng.uniform(110, 170) * rng.uniform([0.95, 0.95, 0.92], [1.05, 1.02, 1.0])
    ).astype(np.float32)
    img[horizon:] = _texture(rng, gh, w, ground_col, 0.18)
    # road band with lane dashes
    road_h = rng.uniform(0.25, 0.45) * gh
    road_y0 = horizon + rng.uniform(0.1, 0.9) * (gh - road_h)
    road_y1 = road_y0 + road_h
    asphalt = rng.uniform(70, 120) * np.ones(3, np.float32)
    r0, r1 = int(road_y0), int(road_y1)
    img[r0:r1] = _texture(rng, r1 - r0, w, asphalt, 0.12)
    mid = (r0 + r1) // 2
    dash = int(rng.uniform(20, 40))
    for dx in range(int(rng.uniform(0, dash)), w, 2 * dash):
        img[mid - 1 : mid + 2, dx : dx + dash] = 220
    img[r0 : r0 + 2] = 200
    img[r1 - 2 : r1] = 200
    # patches: puddles, dirt, shadows
    for _ in range(int(rng.integers(2, 7))):
        cx, cy = rng.uniform(0, w), rng.uniform(horizon, h)
        ax, ay = rng.uniform(15, 80), rng.uniform(5, 25)
        patch = np.zeros((h, w), np.float32)
        cv2.ellipse(patch, (int(cx), int(cy)), (int(ax), int(ay)), 0, 0, 360, 1.0, -1)
        soft = cv2.GaussianBlur(patch, (0, 0), 4)
        img *= (1.0 - rng.uniform(0.1, 0.35) * soft)[..., None]
    base = np.clip(img, 0, 255).astype(np.uint8)
    occluders: list[Prim] = []
    for _ in range(int(rng.integers(0, 3))):
        ox = rng.uniform(0.05, 0.95) * w
        if rng.random() < 0.5:  # lamp post / sign pole
            gy = rng.uniform(horizon + 0.3 * gh, h)
            t = int(rng.uniform(3, 8))
            occluders.append(Line((ox, gy), (ox, gy - rng.uniform(0.5, 0.9) * gy), (60, 60, 65), t))
        else:  # bush
            gy = rng.uniform(horizon + 0.5 * gh, h + 10)
            leaf = (int(rng.uniform(20, 60)), int(rng.uniform(70, 120)), int(rng.uniform(20, 50)))
            ax, ay = rng.uniform(20, 55), rng.uniform(12, 30)
            occluders.append(Ellipse((ox, gy - ay * 0.6), (ax, ay), 0.0, leaf))
            occluders.append(Circle((ox - ax * 0.4, gy - ay), ay * 0.6, leaf))
    return base, Layout(float(horizon), float(road_y0), float(road_y1)), occluders


@dataclass
class Photometric:
    """Per-scene lighting, noise and blur settings, applied to each composited frame."""

    width: int
    height: int
    light_amp: float  # global brightness oscillation amplitude (fraction)
    light_period_s: float
    light_phase: float
    tint_amp: float  # white-balance drift amplitude (fraction per channel)
    blob_amp: float  # moving light / cloud shadow strength (+ light, - shadow)
    blob_speed: tuple[float, float]  # (x, y) in frames-widths per second
    noise_sigma: float  # sensor noise std in grey levels
    blur_sigma: float  # Gaussian blur sigma in px (0 = none)
    noise_bank: np.ndarray  # (H+32, W+32, 3) uint8, 128-centred, std 20

    @classmethod
    def random(cls, rng: np.random.Generator, width: int, height: int) -> Photometric:
        bank = np.clip(
            128.0 + 20.0 * rng.standard_normal((height + 32, width + 32, 3), np.float32), 0, 255
        ).astype(np.uint8)
        return cls(
            width=width,
            height=height,
            light_amp=float(rng.uniform(0.0, 0.25)),
            light_period_s=float(rng.uniform(4.0, 20.0)),
            light_phase=float(rng.uniform(0, 2 * math.pi)),
            tint_amp=float(rng.uniform(0.0, 0.06)),
            blob_amp=float(rng.uniform(-0.35, 0.35)),
            blob_speed=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.03, 0.03))),
            noise_sigma=float(rng.uniform(1.0, 7.0)),
            blur_sigma=float(rng.choice([0.0, 0.0, 0.6, 0.9, 1.3])),
            noise_bank=bank,
        )

    def apply(self, frame: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
        """Lighting, blur and noise for time ``t`` (s); returns a new uint8 frame."""
        gh, gw = 12, 20
        g = 1.0 + self.light_amp * math.sin(
            2 * math.pi * t / self.light_period_s + self.light_phase
        )
        tint = [
            1.0 + self.tint_amp * math.sin(0.21 * t + k * 2.1 + self.light_phase) for k in range(3)
        ]
        yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
        cx = ((0.5 + self.blob_speed[0] * t) % 1.6 - 0.3) * gw
        cy = ((0.4 + self.blob_speed[1] * t) % 1.4 - 0.2) * gh
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.22 * gw) ** 2))
        gain = g * (1.0 + self.blob_amp * blob)[..., None] * np.array(tint, np.float32)
        gain_u8 = np.clip(gain * 128.0, 0, 255).astype(np.uint8)
        gain_full = cv2.resize(gain_u8, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        out = cv2.multiply(frame, gain_full, scale=1.0 / 128.0)
        if self.blur_sigma > 0:
            out = cv2.GaussianBlur(out, (0, 0), self.blur_sigma)
        oy, ox = int(rng.integers(0, 32)), int(rng.integers(0, 32))
        noise = self.noise_bank[oy : oy + self.height, ox : ox + self.width]
        k = self.noise_sigma / 20.0
        return cv2.addWeighted(out, 1.0, noise, k, -128.0 * k)
