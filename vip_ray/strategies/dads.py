"""DADS (Hu et al., INFOCOM'19), a COACH baseline: a minimum s-t cut of the model's DAG between
the end device and the cloud (light / heavy load), fp32 tensors."""
from __future__ import annotations

from vip_ray.coach.planners import plan_dads
from vip_ray.strategies.base import register_strategy
from vip_ray.strategies.endcloud import EndCloudStrategy


@register_strategy("dads")
class Dads(EndCloudStrategy):
    summary = "dads: end-cloud, minimum s-t cut of the DAG (light/heavy load), fp32"
    planner = staticmethod(plan_dads)
