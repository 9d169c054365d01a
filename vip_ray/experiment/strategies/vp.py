"""VP (seed 002): heterogeneous variants, top-k replies, scaled top-k aggregation (eq. 1)."""
from __future__ import annotations

import numpy as np

from vip_ray.aggregation import get_aggregator, vp_weights
from vip_ray.experiment.strategies.base import register_strategy
from vip_ray.experiment.strategies.fanout import FanOutStrategy


class EnsembleStrategy(FanOutStrategy):
    """Variant parallelism: one pool variant per device, combined by ``strategy.aggregator``."""

    #: aggregators that need more than the replies (the class-group owners of strategy cp)
    NOT_FOR_VARIANTS = ("cp",)

    def prepare(self, ctx):
        agg = ctx.scenario.strategy.aggregator
        if agg in self.NOT_FOR_VARIANTS:
            from vip_ray.aggregation import AGGREGATORS
            from vip_ray.scenario import ScenarioError

            allowed = ", ".join(a for a in sorted(AGGREGATORS) if a not in self.NOT_FOR_VARIANTS)
            raise ScenarioError(f"{ctx.file}: strategy.aggregator: {agg!r} combines class-group models "
                                f"(strategy cp); for strategy {self.name!r} allowed: {allowed}", file=ctx.file)

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
