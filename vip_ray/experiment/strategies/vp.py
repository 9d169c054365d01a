"""VP (seed 002): heterogeneous variants, top-k replies, scaled top-k aggregation (eq. 1)."""
from __future__ import annotations

import numpy as np

from vip_ray.aggregation import get_aggregator, vp_weights
from vip_ray.experiment.strategies.base import register_strategy
from vip_ray.experiment.strategies.fanout import FanOutStrategy


class EnsembleStrategy(FanOutStrategy):
    """Variant parallelism: one pool variant per device, combined by ``strategy.aggregator``."""

    def combiner(self, ctx, dep):
        sc = dep.scenario
        name = sc.strategy.aggregator
        agg = get_aggregator(name)
        rho = np.array([v.input_size for v in dep.variants], dtype=np.float64)
        depth = np.array([v.depth_multiplier for v in dep.variants], dtype=np.float64)
        placed = sorted({s.variant for slots in dep.slots for s in slots})
        rho_max, depth_min = rho[placed].max(), depth[placed].min()
        alpha, k = sc.strategy.alpha, dep.k

        def combine(p, use, variant):
            if name != "vp":
                return agg(p, responded=use)
            return agg(p, responded=use, k=k, weights=vp_weights(rho[variant], depth[variant], alpha,
                                                                 rho_max=rho_max, depth_min=depth_min))

        return combine


@register_strategy("vp")
class VariantParallel(EnsembleStrategy):
    summary = "VP: heterogeneous variants, top-k replies, scaled top-k aggregation (default aggregator vp)"
