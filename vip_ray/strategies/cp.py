"""Class parallelism in the manner of sensAI: one small per-class-group model per device, trained
by the pool factory (``shape=class_parallel``) into a pool of its own; the master needs every
group's answer and picks the class with the highest in-group score."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from vip_ray.core.aggregation import AggregationSpec
from vip_ray.strategies.base import Context, register_strategy
from vip_ray.strategies.fanout import FanOutStrategy
from vip_ray.placement.plan import PlacementPlan, plan_placement
from vip_ray.pool import Pool, PoolError
from vip_ray.pool.default import DEFAULT_CP_POOL
from vip_ray.scenario import ScenarioError



class CPOptions(BaseModel):
    """``pool``: the class-parallel pool (default ``default-cp``: 5 class groups on the default
    pool's data, trained on first use)."""

    model_config = ConfigDict(extra="forbid")
    pool: str = DEFAULT_CP_POOL


@register_strategy("cp")
class ClassParallel(FanOutStrategy):
    summary = "cp: class parallelism (sensAI): one class-group model per device, every group needed"
    Options = CPOptions
    multicast_to_idle = False
    multi_master = ()   # it keeps only the devices that run a model: the users' reach would change

    def prepare(self, ctx: Context) -> None:
        name = self.options.pool
        try:  # the caller's pool opener trains the default class-parallel pool on first use
            self.cp_pool = ctx.open_pool(name) if ctx.open_pool else Pool.open(name, ctx.scenario.pool.root)
        except PoolError as e:
            raise ScenarioError(f"{ctx.file}: strategy.options.cp.pool: {e}", file=ctx.file) from None
        members = [m for m in self.cp_pool.manifest.members if m.role == "cp_group"]
        if not members:
            raise ScenarioError(f"{ctx.file}: strategy.options.cp.pool: pool {name!r} has no class-group members "
                                f"(train one with `python -m vip_ray.tune shape=class_parallel`)", file=ctx.file)
        ours, theirs = ctx.pool.manifest.data, self.cp_pool.manifest.data
        if ours.get("fingerprint") != theirs.get("fingerprint"):
            raise ScenarioError(f"{ctx.file}: strategy.options.cp.pool: pool {name!r} was trained on other data "
                                f"({theirs.get('name')}, fingerprint {theirs.get('fingerprint')}) than pool "
                                f"{ctx.pool.name!r} ({ours.get('name')}, {ours.get('fingerprint')}); the requests "
                                f"must carry the same test samples", file=ctx.file)
        if len(members) > len(ctx.scenario.devices):
            raise ScenarioError(f"{ctx.file}: strategy.options.cp.pool: {len(members)} class groups need "
                                f"{len(members)} devices; the scenario has {len(ctx.scenario.devices)}", file=ctx.file)
        self.members = members

    def pool_of(self, ctx: Context) -> Pool:
        return self.cp_pool

    def plan(self, ctx: Context) -> PlacementPlan:
        # every group once, fastest devices first; devices beyond the groups stay idle
        plan = plan_placement(ctx.scenario, self.cp_pool, variants=self.members, k=None,
                              policy="capacity", params={"distinct": True})
        order = sorted(range(len(ctx.scenario.devices)), key=lambda i: -(ctx.scenario.devices[i].speed() or 0.0))
        assignment = [-1] * len(ctx.scenario.devices)
        for g, i in enumerate(order[:len(self.members)]):
            assignment[i] = g
        plan.timeline = [(0.0, assignment)]
        return plan

    def aggregation(self, ctx: Context, plan: PlacementPlan) -> AggregationSpec:
        # every class is scored by the group model that owns it; each group replies its own scores
        return AggregationSpec.build("cp", None, 1.0, self.members, range(len(self.members)),
                                     num_classes=self.cp_pool.num_classes,
                                     classes=[sorted(m.classes) for m in self.members])
