"""JPS (Duan & Wu, TMC'23), a COACH baseline: the split that balances the end-computation and
transmission pipeline stages, min max(T_e, T_t), fp32 tensors."""
from __future__ import annotations

from vip_ray.coach.planners import plan_jps
from vip_ray.strategies.base import register_strategy
from vip_ray.strategies.endcloud import EndCloudStrategy


@register_strategy("jps")
class Jps(EndCloudStrategy):
    summary = "jps: end-cloud, the split balancing end compute and transmission (fp32)"
    planner = staticmethod(plan_jps)
