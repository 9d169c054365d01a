"""``anytime``: ``static`` with the margin rule (:mod:`vip_ray.control.margin`) — answer as soon as
the replies still out cannot change the answer. Every other policy takes ``anytime: true`` too."""
from __future__ import annotations

from vip_ray.control.base import Policy
from vip_ray.control.margin import ANYTIME_AGGREGATORS

__all__ = ["ANYTIME_AGGREGATORS", "Anytime"]


class Anytime(Policy):
    name = "anytime"
    summary = "static + the margin rule: answer as soon as the missing replies cannot change the answer"
