"""The power model's numbers: a device's idle / busy watts and a link radio's per-bit costs and
tail state (what :mod:`vip_ray.core.energy` computes with; part of the world's device and link
specs, :mod:`vip_ray.core.world`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class PowerSpec:
    """A device's electrical power when idle and when computing (W)."""

    idle_w: float
    busy_w: float

    def __post_init__(self):
        for f in ("idle_w", "busy_w"):
            v = float(getattr(self, f))
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"PowerSpec.{f}: must be a finite number >= 0, got {v!r}")
            object.__setattr__(self, f, v)


@dataclass(frozen=True)
class RadioSpec:
    """A link's radio: per-bit energy (``tx_j_per_bit`` / ``rx_j_per_bit``) or power while sending
    / receiving (``tx_w`` / ``rx_w``, J/bit = W / bandwidth); tail state ``tail_w`` for ``tail_s``."""

    tx_w: Optional[float] = None
    rx_w: Optional[float] = None
    tx_j_per_bit: Optional[float] = None
    rx_j_per_bit: Optional[float] = None
    tail_w: float = 0.0
    tail_s: float = 0.0

    def __post_init__(self):
        for f in ("tx_w", "rx_w", "tx_j_per_bit", "rx_j_per_bit", "tail_w", "tail_s"):
            v = getattr(self, f)
            if v is None:
                continue
            v = float(v)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"RadioSpec.{f}: must be a finite number >= 0, got {v!r}")
            object.__setattr__(self, f, v)
        for side in ("tx", "rx"):
            if (getattr(self, f"{side}_w") is None) == (getattr(self, f"{side}_j_per_bit") is None):
                raise ValueError(f"RadioSpec: give exactly one of {side}_w and {side}_j_per_bit")

    def j_per_bit(self, side: str, bandwidth_bps: float) -> float:
        per_bit = getattr(self, f"{side}_j_per_bit")
        return per_bit if per_bit is not None else getattr(self, f"{side}_w") / bandwidth_bps
