"""``static``: today's master — waits for every placed device it does not know is down, until the
deadline. With ``anytime: true`` it also answers early by the margin rule."""
from __future__ import annotations

from vip_ray.control.base import Policy


class Static(Policy):
    name = "static"
    summary = "today's master: wait for every placed device not known down, until the deadline (default)"
