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
    #: engine families it runs on (``serve``: through the live_* methods, vip_ray.control.live)
    engines: tuple[str, ...] = ("sim", "serve")
    #: False: needs information a real master cannot have (refused live)
    master_visible = True

    def __init__(self, options: Any, aggregation: Any = None):
        self.options = options
        self.aggregation = aggregation

    def plan_world(self, dep: Any, run: Any) -> Any:
        """The deployment with the placement changes the policy makes (``run(world)`` simulates a
        world whole); by default none. Only in the simulator."""
        return dep

    def waits(self, timing: Any, deadline_s: float, waits_for: np.ndarray) -> np.ndarray:
        return waits_for

    def answer(self, timing: Any, deadline_s: float, finish: np.ndarray, responded: np.ndarray,
               waits_for: np.ndarray, probs: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``probs`` (V, N, C): the deployment's prediction bank; ``samples`` (R,): each request's
        test sample (what the replies carry). The replies used are those in by the answer (a master
        that answered at ``finish`` has nothing later); the margin rule when ``anytime`` is on."""
        responded = responded & (timing.reply_at <= finish[:, None])
        if getattr(self.options, "anytime", False):
            from vip_ray.control.margin import MarginRule, early_answers

            try:   # the compiled loop (numba, as the jit engine); the numpy rule where numba is missing
                from vip_ray.control.margin_jit import early_answers_jit as early_answers
            except ImportError:   # pragma: no cover
                pass
            if getattr(self, "_rule", None) is None or self._rule.probs is not probs:
                self._rule = MarginRule(self.aggregation, probs)   # once per deployment: the bank's contributions
            finish, responded = early_answers(self._rule.rows(timing), finish, responded, waits_for, self._rule,
                                              samples, scale=self.options.anytime_scale,
                                              min_replies=self.options.min_replies)
        return finish, responded

    # -- the live master (vip_ray.control.live): one request at a time, what it has observed so far --
    def live_reset(self) -> None:
        """A new replication starts: forget what the last one observed."""

    def live_waits(self, t: float, deadline_s: float, waits_for: np.ndarray) -> np.ndarray:
        """(D,) the devices the master waits for, for a request leaving at emulated ``t``."""
        return waits_for

    def live_observe(self, device: int, at_s: float, latency_s: float | None) -> None:
        """A reply of ``device`` reached the master at ``at_s`` after ``latency_s``; ``None``: a
        timeout at ``at_s`` (its deadline) of a request it was expected to answer."""

    def meta(self, world: Any) -> dict[str, Any]:
        """For ``summary.json``: the policy and its re-deployments (a device's placed variant
        changing after t = 0 on the deployed timeline)."""
        return {"control": self.name, "redeployments": redeployments(world)}


def redeployments(world: Any) -> int:
    n = 0
    for dev in world.devices:
        placed = [s.variant for s in dev.timeline() if s.placed]
        n += sum(a != b for a, b in zip(placed, placed[1:]))
    return n


def replied(timing: Any) -> np.ndarray:
    return timing.outcome == Outcome.REPLIED


def with_variant(world: Any, d: int, t: float, variant: int, service_s: float, weight_bits: int,
                 load_s: float) -> tuple[Any, float]:
    """``world`` with device ``d`` re-deployed at ``t`` to ``variant``: no variant while the weights
    cross its link (``weight_bits`` / the link's bandwidth at ``t``, plus the RTT; none for the
    master's own) and load (``load_s``), then ``variant`` (``service_s`` per input). Slots that
    started at or after ``t`` are dropped. Returns the world and the re-deployment's cost (s)."""
    from dataclasses import replace

    from vip_ray.core.world import VariantSlot

    dev = world.devices[d]
    cost = load_s
    if dev.link is not None:
        times, rates = dev.link.steps()
        cost += weight_bits / rates[int(np.searchsorted(times, t, side="right")) - 1] + dev.link.rtt_s
    slots = tuple(x for x in dev.slots if x.start_s < t) + (
        VariantSlot(t, -1, float("inf")), VariantSlot(t + cost, variant, service_s))
    devices = list(world.devices)
    devices[d] = replace(dev, slots=slots)
    return replace(world, devices=tuple(devices)), cost
