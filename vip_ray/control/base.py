"""The policy contract: two master-side decisions, applied vectorised to a chunk of requests
after the engine has computed the devices' timelines (they change no device's timeline), and
what a policy needs to run (engine families, knowledge a real master lacks)."""
from __future__ import annotations

from typing import Any

import numpy as np

from vip_ray.core.tables import Outcome


class Policy:
    """``waits`` — the (R, D) mask of devices the master waits for, from the one today's master
    would wait for; ``answer`` — each request's finish time and the replies used, from
    :func:`vip_ray.core.master.finish_times`. Both see only master-visible facts of the rows
    (reply times, outcomes as timeouts) and the policy's own state across chunks."""

    name = ""
    summary = ""
    #: engine families it runs on (the live engine computes its master table itself today)
    engines: tuple[str, ...] = ("sim",)
    #: False: needs information a real master cannot have (refused live)
    master_visible = True

    def __init__(self, options: Any, aggregation: Any = None):
        self.options = options
        self.aggregation = aggregation
        self.redeployments = 0

    def waits(self, timing: Any, deadline_s: float, waits_for: np.ndarray) -> np.ndarray:
        return waits_for

    def answer(self, timing: Any, deadline_s: float, finish: np.ndarray, responded: np.ndarray,
               waits_for: np.ndarray, probs_rows: Any) -> tuple[np.ndarray, np.ndarray]:
        """``probs_rows(a, b)`` -> the (b - a, D, C) stored predictions of rows a..b (what the
        replies carry). The replies used are those in by the answer (a master that answered at
        ``finish`` has nothing later); the margin rule when ``anytime`` is on."""
        responded = responded & (timing.reply_at <= finish[:, None])
        if getattr(self.options, "anytime", False):
            from vip_ray.control.margin import early_answers

            finish, responded = early_answers(timing, finish, responded, waits_for, probs_rows, self.aggregation,
                                              scale=self.options.anytime_scale,
                                              min_replies=self.options.min_replies)
        return finish, responded

    def meta(self) -> dict[str, Any]:
        return {"control": self.name, "redeployments": self.redeployments}


def replied(timing: Any) -> np.ndarray:
    return timing.outcome == Outcome.REPLIED
