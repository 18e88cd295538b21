"""Deterministic, name-derived weights shared by the reference generator and our tests.

The golden files are produced by super-gradients in its own venv (numpy 1.24) and checked by
our tests (numpy 2.x), so both sides must build *bit-identical* weights without shipping a
checkpoint. Every tensor here is a pure function of its state_dict key and shape:

* the key's CRC-32 seeds a counter-based hash (splitmix64 over ``arange``), done entirely in
  uint64 integer arithmetic, which is exact on every numpy version and platform. Transcendental
  functions (sin/cos) are avoided on purpose: numpy's SIMD float64 ``sin`` differs by an ulp
  between versions, which can flip a float32 rounding.
* the top 24 bits become a uniform in [0, 1) that float32 represents exactly; the scaling below
  is done in float64 with correctly rounded operations (+, *, /, sqrt) and cast to float32 once.

Scales keep activations sane through ~100 conv layers in eval mode (BatchNorm uses running
stats, so nothing renormalises): He-uniform conv weights, BatchNorm close to identity. The
classification head's bias is pulled down (like the usual prior-probability init) so that only
a few hundred of the 8400x80 scores pass conf=0.25, which keeps the NMS parity check meaningful.

Only numpy and the standard library may be imported here: this file runs in both venvs.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

# Tuning knobs (see module docstring). Changing any of them changes every golden file.
CONV_GAIN = 1.8  # times U(-1, 1) / sqrt(fan_in); sqrt(6) ~ 2.45 would be He-uniform for ReLU
BN_WEIGHT_SPREAD = 0.1  # BN gamma in 1 +- spread
BN_BIAS_SPREAD = 0.05  # BN beta in +- spread
RUNNING_MEAN_SPREAD = 0.05
RUNNING_VAR_SPREAD = 0.1  # running_var in 1 +- spread (always positive)
BIAS_SPREAD = 0.02  # plain conv biases
ALPHA_CENTER = 0.5  # residual alphas in centre +- spread; < 1 tames growth along deep stacks
ALPHA_SPREAD = 0.1
CLS_BIAS_CENTER = -4.0  # logit of the class prior; sigmoid(-4) ~ 0.018
# Per variant, tuned so the 1920x1080 parity image gives 100..200 detections at conf 0.25
# (0 or a saturated 300 would make the NMS parity check meaningless).
_CLS_BIAS_CENTER_BY_VARIANT = {"yolo_nas_s": -4.1, "yolo_nas_m": -4.2, "yolo_nas_l": -4.1}
CLS_BIAS_SPREAD = 0.25
CLS_WEIGHT_GAIN = 1.0  # the class logits' weight gain (relative to CONV_GAIN)
CLS_LOGIT_STD = 0.9  # wanted std of the class logits (before bias) on the synthetic images
# Measured std of the class logits with CLS_WEIGHT_GAIN = 1 (tests/parity/README.md, "tuning"),
# per variant and head level: the three levels see features of very different scale, and a
# single gain would leave one model with no detection and another saturated.
_CLS_LOGIT_STD_AT_GAIN_1 = {
    "yolo_nas_s": {"head1": 0.2861, "head2": 0.1844, "head3": 0.2873},
    "yolo_nas_m": {"head1": 0.1553, "head2": 0.07425, "head3": 0.07528},
    "yolo_nas_l": {"head1": 1.072, "head2": 0.2821, "head3": 0.1098},
}
BRANCH_GAIN = 0.6  # QARepVGG's 3x3 and 1x1 branches are summed: each gets this factor
REG_WEIGHT_GAIN = 1.0  # the box-distribution logits' weight gain (relative to CONV_GAIN)
REG_BIN_SLOPE = 0.3  # reg_pred bias = -slope * bin: favours short distances, i.e. varied box sizes

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def key_seed(key: str) -> int:
    """CRC-32 of the key's UTF-8 bytes (stable across Python versions, unlike ``hash``)."""
    return zlib.crc32(key.encode("utf-8")) & 0xFFFFFFFF


def uniform01(key: str, n: int) -> np.ndarray:
    """``n`` float64 values in [0, 1), multiples of 2**-24, derived from ``key`` only."""
    with np.errstate(over="ignore"):
        base = np.uint64(key_seed(key)) << np.uint64(32)
        z = np.arange(n, dtype=np.uint64) + base
        z = z * _GOLDEN + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) * (1.0 / 16777216.0)


def symmetric(key: str, n: int) -> np.ndarray:
    """``n`` float64 values in [-1, 1) derived from ``key`` only."""
    return uniform01(key, n) * 2.0 - 1.0


def _is_cls_logit_layer(key: str) -> bool:
    # super-gradients' NDFLHeads: heads.head{1,2,3}.cls_pred.{weight,bias}
    return ".cls_pred." in key


def _is_reg_logit_layer(key: str) -> bool:
    return ".reg_pred." in key


def _cls_gain(key: str, variant: str | None) -> float:
    measured = _CLS_LOGIT_STD_AT_GAIN_1.get(variant or "", {})
    for level, std in measured.items():
        if f".{level}." in key:
            return CLS_LOGIT_STD / std
    return CLS_WEIGHT_GAIN


def _float_tensor(
    key: str, shape: tuple[int, ...], siblings: Mapping[str, object], variant: str | None
) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    u = symmetric(key, n)
    leaf = key.rsplit(".", 1)[-1]
    prefix = key[: -len(leaf)]
    is_bn = (prefix + "running_var") in siblings

    if leaf == "running_var":
        v = 1.0 + RUNNING_VAR_SPREAD * u
    elif leaf == "running_mean":
        v = RUNNING_MEAN_SPREAD * u
    elif leaf == "alpha":
        v = ALPHA_CENTER + ALPHA_SPREAD * u
    elif leaf == "weight" and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:], dtype=np.int64))
        gain = CONV_GAIN
        if _is_cls_logit_layer(key):
            gain *= _cls_gain(key, variant)
        elif _is_reg_logit_layer(key):
            gain *= REG_WEIGHT_GAIN
        elif ".branch_3x3." in key or ".branch_1x1." in key:
            gain *= BRANCH_GAIN
        if _is_cls_logit_layer(key) or _is_reg_logit_layer(key):
            # Zero-sum over inputs: post-ReLU features share a large positive mean, which
            # would otherwise give every anchor the same per-class offset (one class wins
            # everywhere, every box has the same size). What is left varies across the image.
            # The row sums are exact in float64 (multiples of 2**-23 well below 2**30), so
            # the result does not depend on numpy's summation order.
            w = u.reshape(shape[0], fan_in)
            u = (w - w.sum(axis=1, keepdims=True) / fan_in).reshape(-1)
        v = u * (gain / np.sqrt(float(fan_in)))
    elif leaf == "weight" and is_bn:
        v = 1.0 + BN_WEIGHT_SPREAD * u
    elif leaf == "bias" and is_bn:
        v = BN_BIAS_SPREAD * u
    elif leaf == "bias" and _is_cls_logit_layer(key):
        center = _CLS_BIAS_CENTER_BY_VARIANT.get(variant or "", CLS_BIAS_CENTER)
        v = center + CLS_BIAS_SPREAD * u
    elif leaf == "bias" and _is_reg_logit_layer(key):
        # channels are (side, bin) with bin fastest: 4 sides x (reg_max + 1) bins
        bins = np.arange(n, dtype=np.float64) % (n // 4)
        v = BIAS_SPREAD * u - REG_BIN_SLOPE * bins
    elif leaf == "bias":
        v = BIAS_SPREAD * u
    else:  # any other float parameter or buffer: small and centred
        v = BIAS_SPREAD * u
    return v.astype(np.float32).reshape(shape)


def deterministic_state_dict(
    shapes: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, str] | None = None,
    variant: str | None = None,
) -> dict[str, np.ndarray]:
    """Weights for every key of ``shapes``; each tensor depends on its key (and shape) only.

    ``dtypes`` maps key -> numpy dtype name ("float32", "int64"); missing keys default to
    int64 for ``num_batches_tracked`` and float32 otherwise. Integer tensors get a small
    key-derived count (its value never affects eval-mode outputs). ``variant``
    ("yolo_nas_s" / "_m" / "_l") only selects the class-logit gain per head level; any other
    value (or None) uses ``CLS_WEIGHT_GAIN``.
    """
    out: dict[str, np.ndarray] = {}
    for key, shape_like in shapes.items():
        shape = tuple(int(s) for s in shape_like)
        default = "int64" if key.endswith("num_batches_tracked") else "float32"
        dtype = np.dtype((dtypes or {}).get(key, default))
        if dtype.kind in "iu":
            out[key] = np.full(shape, key_seed(key) % 1000, dtype=dtype)
        elif dtype == np.float32:
            out[key] = _float_tensor(key, shape, shapes, variant)
        else:
            raise ValueError(f"{key}: unsupported dtype {dtype} (float32 or integer expected)")
    return out


def fingerprint(state: Mapping[str, np.ndarray]) -> str:
    """CRC-32 over keys and raw bytes, in key order: a cheap cross-venv equality check."""
    crc = 0
    for key in sorted(state):
        arr = np.ascontiguousarray(state[key])
        crc = zlib.crc32(key.encode("utf-8"), crc)
        crc = zlib.crc32(arr.dtype.str.encode() + arr.tobytes(), crc)
    return f"{crc:08x}"
