"""VP (seed 002): heterogeneous variants, top-k replies, scaled top-k aggregation (eq. 1)."""
from __future__ import annotations

from vip_ray.aggregation import AggregationSpec
from vip_ray.experiment.strategies.base import register_strategy
from vip_ray.experiment.strategies.fanout import FanOutStrategy


class EnsembleStrategy(FanOutStrategy):
    """Variant parallelism: one pool variant per device, combined by ``strategy.aggregator``."""

    #: aggregators that need more than the replies (the class-group owners of strategy cp)
    NOT_FOR_VARIANTS = ("cp",)
    engines = ("sim", "serve")   # the Serve ingress calls the same :func:`aggregation_spec`

    def prepare(self, ctx):
        agg = ctx.scenario.strategy.aggregator
        if agg in self.NOT_FOR_VARIANTS:
            from vip_ray.aggregation import AGGREGATORS
            from vip_ray.scenario import ScenarioError

            allowed = ", ".join(a for a in sorted(AGGREGATORS) if a not in self.NOT_FOR_VARIANTS)
            raise ScenarioError(f"{ctx.file}: strategy.aggregator: {agg!r} combines class-group models "
                                f"(strategy cp); for strategy {self.name!r} allowed: {allowed}", file=ctx.file)

    def combiner(self, ctx, dep):
        spec = aggregation_spec(dep)
        return lambda p, use, variant: spec(p, variant, use)


def aggregation_spec(dep) -> AggregationSpec:
    """The master's aggregation over the variants the deployment places at some time: plain data
    that the simulator's tables and the Serve ingress call alike."""
    sc = dep.scenario
    placed = [s.variant for slots in dep.slots for s in slots if s.placed]
    return AggregationSpec.build(sc.strategy.aggregator, dep.k, sc.strategy.alpha, dep.variants, placed)


@register_strategy("vp")
class VariantParallel(EnsembleStrategy):
    summary = "VP: heterogeneous variants, top-k replies, scaled top-k aggregation (default aggregator vp)"
