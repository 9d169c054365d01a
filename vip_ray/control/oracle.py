"""``oracle``: the variants are re-placed at every availability change scheduled in advance
(crash times, trace interval edges; :func:`vip_ray.placement.plan.plan`, as ``placement.dynamic``).
A real master cannot know those in advance: an upper bound, simulator only. The re-placement
itself is free (no weights' transfer or load time is charged)."""
from __future__ import annotations

from vip_ray.control.base import Policy


class Oracle(Policy):
    name = "oracle"
    summary = "re-place variants at the scheduled availability changes (knows the future; simulator only)"
    master_visible = False
    engines = ("sim",)
