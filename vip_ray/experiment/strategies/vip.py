"""VIP (seed 000): diverse variants, replies averaged (default aggregator vip)."""
from __future__ import annotations

from vip_ray.experiment.strategies.base import register_strategy
from vip_ray.experiment.strategies.vp import EnsembleStrategy


@register_strategy("vip")
class VariantInferenceParallel(EnsembleStrategy):
    summary = "VIP: diverse variants, full probability replies averaged (default aggregator vip)"
