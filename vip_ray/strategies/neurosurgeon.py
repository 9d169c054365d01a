"""Neurosurgeon (Kang et al., ASPLOS'17), a COACH baseline: the latency-optimal single split of the
layer chain between the end device and the cloud, fp32 tensors."""
from __future__ import annotations

from vip_ray.coach.planners import plan_neurosurgeon
from vip_ray.strategies.base import register_strategy
from vip_ray.strategies.endcloud import EndCloudStrategy


@register_strategy("neurosurgeon")
class Neurosurgeon(EndCloudStrategy):
    summary = "neurosurgeon: end-cloud, the latency-optimal split of the layer chain (fp32)"
    planner = staticmethod(plan_neurosurgeon)
