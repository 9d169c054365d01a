"""Uniform affine quantization (UAQ, Krishnamoorthi 2018 §2.1) of intermediate tensors (torch;
imported only by the end–cloud planners and the engines that run their plans).

COACH (§III-B) compresses what crosses the end→cloud boundary with UAQ: per tensor,
``scale = (max - min) / (2^b - 1)``, an integer zero point so that 0.0 is exact, ``q =
clamp(round(x / scale) + zp, 0, 2^b - 1)`` on the end device and ``x' = (q - zp) * scale`` on
the cloud. Each task's tensor gets its own range (dynamic quantization: the range travels with
the payload), so no calibration of ranges is needed.
"""
from __future__ import annotations

import math

import torch

#: bit widths COACH may choose from (the grid of its dichotomous and online searches)
MIN_BITS, MAX_BITS = 2, 16
#: what "no quantization" is recorded as (fp32 on the wire)
FP32 = 32
#: bytes of the per-tensor header: fp32 scale + int32 zero point
HEADER_BYTES = 8


def check_bits(bits: int) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not (MIN_BITS <= bits <= MAX_BITS or bits == FP32):
        raise ValueError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}] or {FP32} (no quantization), got {bits!r}")
    return bits


def qparams(x: torch.Tensor, bits: int, dim: int | None = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) per sample (``dim`` = batch axis; None: one pair for the whole tensor).

    The range always contains 0 (so ReLU zeros stay exact); a constant tensor gets scale 1.
    """
    check_bits(bits)
    levels = (1 << bits) - 1
    if dim is None:
        lo, hi = x.min(), x.max()
    else:
        flat = x.transpose(0, dim).reshape(x.shape[dim], -1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    scale = (hi - lo) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero_point = torch.clamp(torch.round(-lo / scale), 0, levels)
    return scale, zero_point


def _view(p: torch.Tensor, x: torch.Tensor, dim: int | None) -> torch.Tensor:
    if dim is None or p.ndim == 0:
        return p
    shape = [1] * x.ndim
    shape[dim] = -1
    return p.view(shape)


def quantize(x: torch.Tensor, bits: int, dim: int | None = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, scale, zero_point): ``q`` holds integers in [0, 2^bits - 1] (as float, for speed)."""
    scale, zp = qparams(x, bits, dim)
    levels = (1 << bits) - 1
    q = torch.clamp(torch.round(x / _view(scale, x, dim)) + _view(zp, x, dim), 0, levels)
    return q, scale, zp


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, dim: int | None = 0) -> torch.Tensor:
    return (q - _view(zero_point, q, dim)) * _view(scale, q, dim)


def fake_quantize(x: torch.Tensor, bits: int, dim: int | None = 0) -> torch.Tensor:
    """What the cloud receives: ``dequantize(quantize(x))``; ``bits == 32`` returns ``x``."""
    if bits == FP32:
        return x
    q, scale, zp = quantize(x, bits, dim)
    return dequantize(q, scale, zp, dim)


def step_size(x: torch.Tensor, bits: int, dim: int | None = 0) -> torch.Tensor:
    """The quantization step (scale) per sample: the bound on ``|x - fake_quantize(x)|``."""
    return qparams(x, bits, dim)[0]


def wire_bytes(numel: int, bits: int) -> int:
    """Bytes of one quantized tensor of ``numel`` values on the wire (payload + header);
    fp32 (``bits == 32``) sends 4 bytes a value and no header."""
    check_bits(bits)
    if bits == FP32:
        return 4 * int(numel)
    return math.ceil(int(numel) * bits / 8) + HEADER_BYTES
