"""Class parallelism in the manner of sensAI: one small per-class-group model per device, trained
by the pool factory (``shape=class_parallel``) into a pool of its own; the master needs every
group's answer and picks the class with the highest in-group score."""
from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from vip_ray.aggregation import cp_aggregate, cp_reply_bytes
from vip_ray.experiment.strategies.base import Context, register_strategy
from vip_ray.experiment.strategies.fanout import FanOutStrategy
from vip_ray.placement.plan import PlacementPlan, plan_placement
from vip_ray.pool import Pool, PoolError, pools_root
from vip_ray.scenario import ScenarioError

DEFAULT_CP_POOL = "default-cp"


class CPOptions(BaseModel):
    """``pool``: the class-parallel pool (default ``default-cp``: 5 class groups on the default
    pool's data, trained on first use)."""

    model_config = ConfigDict(extra="forbid")
    pool: str = DEFAULT_CP_POOL


def group_masks(members, num_classes: int) -> np.ndarray:
    """(G, C) bool: which classes each group member owns."""
    masks = np.zeros((len(members), num_classes), dtype=bool)
    for g, mem in enumerate(members):
        masks[g, list(mem.classes)] = True
    return masks


@register_strategy("cp")
class ClassParallel(FanOutStrategy):
    summary = "cp: class parallelism (sensAI): one class-group model per device, every group needed"
    Options = CPOptions
    multicast_to_idle = False

    def prepare(self, ctx: Context) -> None:
        name = self.options.pool
        root = ctx.scenario.pool.root
        if not (pools_root(root) / name).exists() and name == DEFAULT_CP_POOL:
            from vip_ray.experiment.pools import ensure_default_cp_pool

            self.cp_pool = ensure_default_cp_pool(root, log=ctx.log)
        else:
            try:
                self.cp_pool = Pool.open(name, root)
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
        self.masks = group_masks(members, self.cp_pool.num_classes)

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

    def reply_bytes(self, ctx: Context, plan: PlacementPlan) -> list[int]:
        return [cp_reply_bytes(int(self.masks[a].sum())) if a >= 0 else 0 for a in plan.timeline[0][1]]

    def combiner(self, ctx, dep):
        # the placement is static and every device runs one group: the owners are per column
        classes = self.masks[[slots[0].variant for slots in dep.slots]]

        def combine(p, use, variant):
            return cp_aggregate(p, responded=use, classes=classes)

        return combine
