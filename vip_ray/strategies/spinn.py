"""SPINN (Laskaridis et al., MobiCom'20), a COACH baseline: early-exit heads, fixed 8-bit
quantization, the split re-chosen per task as the bandwidth changes."""
from __future__ import annotations

from vip_ray.coach.planners import SpinnOptions, plan_spinn
from vip_ray.strategies.base import register_strategy
from vip_ray.strategies.endcloud import EndCloudStrategy


@register_strategy("spinn")
class Spinn(EndCloudStrategy):
    summary = "spinn: end-cloud, early-exit heads + fixed 8-bit quantization, dynamic split"
    Options = SpinnOptions
    planner = staticmethod(plan_spinn)
