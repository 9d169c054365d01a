"""What a strategy gives an engine for one replication (the strategy contract's product).

Three shapes cover every registered strategy:

* :class:`FanOut` — the master multicasts each input to its devices, each runs the variant placed
  on it, the master aggregates the replies that arrive by the deadline (single, cp, VP, VIP);
* :class:`Chain` — consecutive model slices on a chain of devices, activations between them (mp);
* :class:`Pipeline` — a two-stage end device → cloud pipeline (COACH and its baselines).

Every engine consumes only these. They hold the world (:mod:`vip_ray.core.world`), the
aggregation rule (:class:`vip_ray.core.aggregation.AggregationSpec`) and the pool whose
prediction bank (and, live, whose weights and test images) the requests use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from vip_ray.core.aggregation import AggregationSpec
from vip_ray.core.world import DeviceSpec, SimSpec, WorkloadSpec


@dataclass(frozen=True, eq=False)
class Deployment:
    """Common to every shape: who deploys it, for which scenario and seed, from which pool."""

    kind: ClassVar[str] = ""
    strategy: str
    scenario: str
    seed: int
    pool: Any                      # vip_ray.pool.Pool: labels, prediction bank, manifest, weights
    top_m: int                     # M of the correct_topM column
    meta: dict = field(default_factory=dict)   # reported in summary.json (placement, cuts, plans)

    @property
    def labels(self) -> np.ndarray:
        return self.pool.labels


@dataclass(frozen=True, eq=False)
class FanOut(Deployment):
    """``world``: the devices (their variant slots, availability, link), workload and medium;
    ``variants``: the pool members the slots index; ``probs``: their softmaxed prediction bank
    (V, N, C); ``aggregation``: the master's rule over the replies."""

    kind: ClassVar[str] = "fanout"
    world: SimSpec = None
    variants: tuple = ()
    probs: np.ndarray = None
    aggregation: AggregationSpec = None
    control: Any = None            # the master's online controller (vip_ray.control); None: today's master

    @property
    def devices(self) -> tuple[DeviceSpec, ...]:
        return self.world.devices

    @property
    def workload(self) -> WorkloadSpec:
        return self.world.workload

    @property
    def device_names(self) -> list[str]:
        return [d.name for d in self.world.devices]

    @property
    def master(self) -> int | None:
        """Index of the master among the devices (``None``: the strategy left it out)."""
        return next((i for i, d in enumerate(self.world.devices) if d.role == "master"), None)

    def placement(self) -> dict[str, list]:
        """``{device: [variant id or None, since s]}`` at t = 0, for ``summary.json``."""
        out = {}
        for d in self.world.devices:
            s = d.first_slot
            out[d.name] = [self.variants[s.variant].id if s else None, s.start_s if s else 0.0]
        return out

    def same_world(self, other: "FanOut") -> bool:
        """Equal but for the seed (a long-lived engine keeps its deployment up across seeds)."""
        a, b = self.world, other.world
        return (type(other) is FanOut and a.devices == b.devices and a.workload == b.workload
                and a.shared_medium == b.shared_medium and self.aggregation == other.aggregation
                and [v.id for v in self.variants] == [v.id for v in other.variants]
                and self.pool.path == other.pool.path and self.strategy == other.strategy
                and _control_key(self.control) == _control_key(other.control))


@dataclass(frozen=True, eq=False)
class Chain(Deployment):
    """Model parallelism: ``world.devices`` are the devices taking part (each one's slot holds its
    slice's mean compute time), ``stages`` the device index of each slice in model order,
    ``stage_bytes[s]`` the tensor entering slice ``s``, ``out_bytes`` the reply; ``probs`` (N, C)
    the whole model's softmaxed predictions; ``slices`` / ``slice_macs`` name and size them,
    ``blocks`` says which of the member's blocks each slice runs (a live engine builds them)."""

    kind: ClassVar[str] = "chain"
    world: SimSpec = None
    stages: tuple = ()
    stage_bytes: tuple = ()
    out_bytes: int = 0
    on_failure: str = "fail"
    probs: np.ndarray = None
    member: str = ""
    slices: tuple = ()
    slice_macs: tuple = ()
    blocks: tuple = ()          # (start, end) block indices of each slice (vip_ray.models.cuts.block_modules)
    wire_dtype: str = "float32"  # element type of the activations on the wire

    @property
    def master(self) -> int:
        return next(i for i, d in enumerate(self.world.devices) if d.role == "master")


@dataclass(frozen=True, eq=False)
class Pipeline(Deployment):
    """End device → cloud: ``setup`` (the two devices, the link, the member's layer times and
    cost model) and ``planned`` (the partition, the bit widths and the per-task decision rule)
    from :mod:`vip_ray.coach`; ``arrivals`` / ``samples`` the seed's tasks and their frames. The
    engine drives the decisions, the strategy made them."""

    kind: ClassVar[str] = "pipeline"
    setup: Any = None
    planned: Any = None
    arrivals: np.ndarray = None     # the seed's task arrival times (s), the workload's stream
    samples: np.ndarray = None      # the bank row (test frame) each task carries


SHAPES = {c.kind: c for c in (FanOut, Chain, Pipeline)}


def _control_key(control: Any) -> Any:
    """A controller's identity for reusing a running deployment (a fresh object per seed)."""
    return None if control is None else (type(control).__name__, getattr(control, "options", None))
