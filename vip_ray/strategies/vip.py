"""VIP: diverse variants, replies averaged (default aggregator vip)."""
from __future__ import annotations

from vip_ray.strategies.base import register_strategy
from vip_ray.strategies.vp import EnsembleStrategy


@register_strategy("vip")
class VariantInferenceParallel(EnsembleStrategy):
    summary = "VIP: diverse variants, full probability replies averaged (default aggregator vip)"
