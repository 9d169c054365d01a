"""Fan-out strategies: the master multicasts each input, every placed device runs its model, the
master combines what came back by the deadline (VP, VIP, single-device, class parallelism)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from vip_ray.control import controller
from vip_ray.core.aggregation import AggregationSpec, softmax
from vip_ray.core.deployment import FanOut
from vip_ray.core.tables import top_m
from vip_ray.placement.plan import PlacementPlan, placed_devices, plan_placement
from vip_ray.pool import Pool
from vip_ray.scenario import Scenario
from vip_ray.scenario.world import world
from vip_ray.strategies.base import Context, Strategy


class FanOutStrategy(Strategy):
    """Hooks: :meth:`pool_of`, :meth:`scenario_of`, :meth:`plan`, :meth:`aggregation`."""

    kind = "fanout"
    engines = ("sim", "serve")

    #: whether devices with nothing placed still receive every input (VP / VIP: the multicast
    #: reaches the whole group); single and CP address only the devices that run a model.
    multicast_to_idle = True

    #: several masters (``masters:``), each multicasting to the devices it reaches: the simulator
    #: runs them (the Serve ingress is one master)
    multi_master = ("sim",)

    def pool_of(self, ctx: Context) -> Pool:
        """The pool whose members run on the devices (and whose bank gives the predictions)."""
        return ctx.pool

    def scenario_of(self, ctx: Context) -> Scenario:
        """The devices that take part (default: all of the scenario's)."""
        return ctx.scenario

    def plan(self, ctx: Context) -> PlacementPlan:
        return plan_placement(self.scenario_of(ctx), self.pool_of(ctx))

    def aggregation(self, ctx: Context, plan: PlacementPlan) -> AggregationSpec:
        """The master's rule over the replies (default: ``strategy.aggregator``)."""
        sc = ctx.scenario.strategy
        placed = [v for _, a in plan.timeline for v in a if v >= 0]
        return AggregationSpec.build(sc.aggregator, plan.k, sc.alpha, plan.variants, placed,
                                     num_classes=self.pool_of(ctx).num_classes)

    def bank_probs(self, ctx: Context, plan: PlacementPlan) -> np.ndarray:
        key = ("probs", self.name, tuple(v.id for v in plan.variants))
        if key not in ctx.cache:
            ctx.cache[key] = softmax(self.pool_of(ctx).logits([v.id for v in plan.variants]).astype(np.float64), axis=-1)
        return ctx.cache[key]

    def _planned(self, ctx: Context) -> tuple[Scenario, PlacementPlan, AggregationSpec]:
        key = ("plan", self.name)
        if key not in ctx.cache:  # placement is deterministic: once per run
            scenario, plan = self.scenario_of(ctx), self.plan(ctx)
            for note in plan.warnings:  # said once per run, before any result
                ctx.log(f"[vip_ray] warning: {note}")
            if not self.multicast_to_idle:
                scenario, plan = only_devices(scenario, plan, placed_devices(plan))
            ctx.cache[key] = scenario, plan, self.aggregation(ctx, plan)
        return ctx.cache[key]

    def deploy(self, ctx: Context, seed: int) -> FanOut:
        scenario, plan, agg = self._planned(ctx)
        pool = self.pool_of(ctx)
        ctl = controller(ctx.scenario.control, agg)
        w = world(scenario, plan, agg, seed=seed)
        meta = {"placement_warnings": list(plan.warnings)} if plan.warnings else {}
        if ctl is not None and getattr(ctl.options, "adaptive_k", False) and agg.name == "vp":
            # each device's k from the up-link bandwidth the master measures, before any engine
            # computes a timeline: the world is built again with the reply sizes these k give
            from vip_ray.control.topk import with_device_k

            agg = with_device_k(ctl.options, w, agg)
            ctl.aggregation = agg
            w = world(scenario, plan, agg, seed=seed)
            meta["k_by_device"] = {d.name: k for d, k in zip(w.devices, agg.k_device)}
        if ctl is not None:   # what the controller changed (static's summary stays as it was)
            ctl.service_s = plan.service_s       # (device, variant) compute times, for re-deployments
            meta.update(ctl.meta(w))
        return FanOut(strategy=self.name, scenario=ctx.scenario.name, seed=seed, pool=pool,
                      top_m=top_m(pool.num_classes), world=w,
                      variants=tuple(plan.variants), probs=self.bank_probs(ctx, plan), aggregation=agg,
                      meta=meta, control=ctl)


def only_devices(scenario: Scenario, plan: PlacementPlan, keep: list[int]) -> tuple[Scenario, PlacementPlan]:
    """The scenario and plan restricted to devices ``keep``."""
    sub = scenario.model_copy(update={"devices": [scenario.devices[i] for i in keep]})
    timeline = [(t, [a[i] for i in keep]) for t, a in plan.timeline]
    return sub, replace(plan, service_s=plan.service_s[keep], timeline=timeline)
