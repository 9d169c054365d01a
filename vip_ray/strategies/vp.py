"""VP: heterogeneous variants, top-k replies, scaled top-k aggregation (VP eq. 1)."""
from __future__ import annotations

from vip_ray.core.aggregation import AGGREGATORS
from vip_ray.scenario import ScenarioError
from vip_ray.strategies.base import register_strategy
from vip_ray.strategies.fanout import FanOutStrategy


class EnsembleStrategy(FanOutStrategy):
    """Variant parallelism: one pool variant per device, combined by ``strategy.aggregator``."""

    #: aggregators that need more than the replies (the class-group owners of strategy cp)
    NOT_FOR_VARIANTS = ("cp",)

    def prepare(self, ctx):
        agg = ctx.scenario.strategy.aggregator
        if agg in self.NOT_FOR_VARIANTS:
            allowed = ", ".join(a for a in sorted(AGGREGATORS) if a not in self.NOT_FOR_VARIANTS)
            raise ScenarioError(f"{ctx.file}: strategy.aggregator: {agg!r} combines class-group models "
                                f"(strategy cp); for strategy {self.name!r} allowed: {allowed}", file=ctx.file)


@register_strategy("vp")
class VariantParallel(EnsembleStrategy):
    summary = "VP: heterogeneous variants, top-k replies, scaled top-k aggregation (default aggregator vp)"
