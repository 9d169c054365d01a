"""Single device: the whole baseline model (e.g. MobileNetV2, or VIP's teacher) on one device."""
from __future__ import annotations

from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict

from vip_ray.core.aggregation import AggregationSpec, reply_bytes
from vip_ray.placement.plan import PlacementPlan, down_at, network_s, reply_top_k, service_matrix
from vip_ray.scenario import ScenarioError
from vip_ray.scenario.load import baseline_member, input_bytes
from vip_ray.strategies.base import register_strategy
from vip_ray.strategies.fanout import FanOutStrategy


class SingleOptions(BaseModel):
    """``model``: pool member id (default: the pool's first baseline, else its teacher);
    ``device``: a device name, or ``auto`` — the device with the lowest expected latency
    (compute + network at t = 0), skipping devices known to be down at t = 0 when
    ``placement.dynamic`` is on."""

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = None
    device: str = "auto"


@register_strategy("single")
class SingleDevice(FanOutStrategy):
    summary = "single: the whole baseline model on one device (no ensemble, no split)"
    Options = SingleOptions
    multicast_to_idle = False
    multi_master = ()   # it keeps only the devices that run a model: the users' reach would change

    def prepare(self, ctx):
        self.member = baseline_member(ctx.pool, self.options.model, "strategy.options.single.model", file=ctx.file)
        names = [d.name for d in ctx.scenario.devices]
        if self.options.device != "auto" and self.options.device not in names:
            raise ScenarioError(f"{ctx.file}: strategy.options.single.device: no device {self.options.device!r}; "
                                f"allowed: auto, {', '.join(names)}", file=ctx.file)

    def plan(self, ctx) -> PlacementPlan:
        sc = ctx.scenario
        k = reply_top_k(sc)
        rbytes, in_bytes = reply_bytes(k, ctx.pool.num_classes), input_bytes(sc, ctx.pool)
        service = service_matrix(sc, [self.member])
        if self.options.device == "auto":
            cost = np.array([service[i, 0] + network_s(d, in_bytes + rbytes) for i, d in enumerate(sc.devices)])
            if sc.placement.dynamic:
                cost[[down_at(d.availability, 0.0) for d in sc.devices]] = np.inf
            chosen = int(np.argmin(cost))
        else:
            chosen = [d.name for d in sc.devices].index(self.options.device)
        if not np.isfinite(service[chosen, 0]):
            raise ScenarioError(f"{ctx.file}: strategy.options.single: device {sc.devices[chosen].name!r} cannot run "
                                f"{self.member.id!r} (no speed or latency entry for it)", file=ctx.file)
        assignment = [-1] * len(sc.devices)
        assignment[chosen] = 0
        return PlacementPlan([self.member], service, [(0.0, assignment)], k, rbytes, in_bytes)

    def aggregation(self, ctx, plan):
        # one device runs the whole model: its reply is the answer
        return AggregationSpec.build("first", plan.k, 1.0, plan.variants, [0], num_classes=ctx.pool.num_classes)
