"""Fan-out strategies: the master multicasts each input, every placed device runs its model, the
master combines what came back by the deadline (VP, VIP, single-device, class parallelism)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from vip_ray.aggregation import softmax
from vip_ray.experiment.deployment import Deployment, build_deployment
from vip_ray.experiment.outcome import Combine, device_table, request_table
from vip_ray.experiment.strategies.base import Context, Replication, Strategy
from vip_ray.placement.plan import PlacementPlan, plan_placement
from vip_ray.pool import Pool
from vip_ray.scenario import Scenario
from vip_ray.sim.engine import run_chunks
from vip_ray.tables import sample_rng


class FanOutStrategy(Strategy):
    """Hooks: :meth:`pool_of`, :meth:`scenario_of`, :meth:`plan`, :meth:`reply_bytes`, :meth:`combiner`."""

    def pool_of(self, ctx: Context) -> Pool:
        """The pool whose members run on the devices (and whose bank gives the predictions)."""
        return ctx.pool

    def scenario_of(self, ctx: Context) -> Scenario:
        """The devices that take part (default: all of the scenario's)."""
        return ctx.scenario

    def plan(self, ctx: Context) -> PlacementPlan:
        return plan_placement(self.scenario_of(ctx), self.pool_of(ctx))

    #: whether devices with nothing placed still receive every input (VP / VIP: the multicast
    #: reaches the whole group); single and CP address only the devices that run a model.
    multicast_to_idle = True

    def reply_bytes(self, ctx: Context, plan: PlacementPlan) -> list[int] | None:
        """Bytes of each device's reply (default: the plan's, one figure for all)."""
        return None

    def combiner(self, ctx: Context, dep: Deployment) -> Combine:
        raise NotImplementedError

    def bank_probs(self, ctx: Context, plan: PlacementPlan) -> np.ndarray:
        key = ("probs", self.name, tuple(v.id for v in plan.variants))
        if key not in ctx.cache:
            ctx.cache[key] = softmax(self.pool_of(ctx).logits([v.id for v in plan.variants]).astype(np.float64), axis=-1)
        return ctx.cache[key]

    def replication(self, ctx: Context, *, seed: int, replication: int, engine: str,
                    chunk_requests: int) -> Replication:
        return Replication(self._run(ctx, seed, replication, engine, chunk_requests))

    def _run(self, ctx, seed, replication, engine, chunk_requests):
        scenario, pool = self.scenario_of(ctx), self.pool_of(ctx)
        key = ("plan", self.name)
        if key not in ctx.cache:  # placement is deterministic: once per run
            ctx.cache[key] = self.plan(ctx)
        plan = ctx.cache[key]
        rbytes = self.reply_bytes(ctx, plan)
        if not self.multicast_to_idle:
            keep = [i for i in range(len(scenario.devices)) if any(a[i] >= 0 for _, a in plan.timeline)]
            scenario, plan = only_devices(scenario, plan, keep)
            rbytes = [rbytes[i] for i in keep] if rbytes is not None else None
        dep = build_deployment(scenario, pool, seed=seed, plan=plan, reply_bytes=rbytes)
        probs = self.bank_probs(ctx, plan)
        combine = self.combiner(ctx, dep)
        samples = sample_rng(seed)  # which test sample each request carries
        totals, t_start, t_end, events, wall = None, 0.0, 0.0, 0, 0.0
        last = None
        for i, chunk in enumerate(run_chunks(dep.spec, engine, chunk_requests=chunk_requests)):
            yield request_table(chunk, dep, probs, combine, replication=replication, seed=seed,
                                sample_rng=samples, strategy=self.name)
            st = chunk.device_stats
            totals = {k: np.array(v, copy=True) for k, v in st.items()} if totals is None else \
                {k: totals[k] + st[k] for k in totals}
            t_start = chunk.t_start if i == 0 else t_start
            t_end = chunk.t_end
            events += chunk.events
            wall += chunk.wall_s
            last = chunk
        last.device_stats, last.t_start, last.t_end = totals, t_start, t_end
        placement = {dv: [dep.variants[s.variant].id if np.isfinite(s.service_s) else None, s.start_s]
                     for dv, slots in zip(dep.device_names, dep.slots) for s in slots[:1]}
        return device_table(last, dep, replication=replication), {"placement": placement, "events": events,
                                                                  "engine_wall_s": wall}


def only_devices(scenario: Scenario, plan: PlacementPlan, keep: list[int]) -> tuple[Scenario, PlacementPlan]:
    """The scenario and plan restricted to devices ``keep``."""
    sub = scenario.model_copy(update={"devices": [scenario.devices[i] for i in keep]})
    timeline = [(t, [a[i] for i in keep]) for t, a in plan.timeline]
    return sub, replace(plan, service_s=plan.service_s[keep], timeline=timeline)


def first_responder(p: np.ndarray, use: np.ndarray, variant: np.ndarray) -> np.ndarray:
    """The probabilities of the first device that answered (NaN rows where none did)."""
    col = np.argmax(use, axis=1)
    out = p[np.arange(len(p)), col].copy()
    out[~use.any(axis=1)] = np.nan
    return out


def member_table(members: list[Any]) -> pd.DataFrame:
    return pd.DataFrame([{"id": m.id, "model": m.model, "macs": m.macs, "accuracy": m.accuracy} for m in members])
