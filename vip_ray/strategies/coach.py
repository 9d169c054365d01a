"""COACH (COACH): offline partition + quantization by divide and conquer, online semantic-cache
early exit and per-task bit width, on an end device + cloud pipeline (see ``vip_ray.coach``)."""
from __future__ import annotations

from vip_ray.coach.planners import CoachOptions, plan_coach
from vip_ray.strategies.base import register_strategy
from vip_ray.strategies.endcloud import EndCloudStrategy


@register_strategy("coach")
class Coach(EndCloudStrategy):
    summary = "coach: end-cloud pipeline, bubble-minimising partition + quantization, semantic-cache early exit"
    Options = CoachOptions
    planner = staticmethod(plan_coach)
