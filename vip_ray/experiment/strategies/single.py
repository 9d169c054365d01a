"""Single device: the whole baseline model (e.g. MobileNetV2, or VIP's teacher) on one device."""
from __future__ import annotations

from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict

from vip_ray.experiment.strategies.base import Context, register_strategy
from vip_ray.experiment.strategies.fanout import FanOutStrategy, first_responder
from vip_ray.placement.plan import PlacementPlan, down_at, network_s, reply_top_k, service_matrix
from vip_ray.aggregation import reply_bytes
from vip_ray.scenario import ScenarioError
from vip_ray.scenario.load import input_bytes


class SingleOptions(BaseModel):
    """``model``: pool member id (default: the pool's first baseline, else its teacher);
    ``device``: a device name, or ``auto`` — the device with the lowest expected latency
    (compute + network at t = 0), skipping devices known to be down at t = 0 when
    ``placement.dynamic`` is on."""

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = None
    device: str = "auto"


def baseline_member(ctx: Context, member_id: str | None, key: str):
    manifest = ctx.pool.manifest
    if member_id is not None:
        if member_id not in manifest.ids():
            raise ScenarioError(f"{ctx.file}: {key}: pool {manifest.name!r} has no member {member_id!r}; "
                                f"members: {', '.join(manifest.ids())}", file=ctx.file)
        return manifest.member(member_id)
    for role in ("baseline", "teacher"):
        ids = [m.id for m in manifest.members if m.role == role and ".B" not in m.id]
        if ids:
            return manifest.member(ids[0])
    raise ScenarioError(f"{ctx.file}: {key}: pool {manifest.name!r} has no baseline or teacher member; "
                        f"name one of {', '.join(manifest.ids())}", file=ctx.file)


@register_strategy("single")
class SingleDevice(FanOutStrategy):
    summary = "single: the whole baseline model on one device (no ensemble, no split)"
    Options = SingleOptions
    multicast_to_idle = False

    def prepare(self, ctx):
        self.member = baseline_member(ctx, self.options.model, "strategy.options.single.model")
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

    def combiner(self, ctx, dep):
        return first_responder
