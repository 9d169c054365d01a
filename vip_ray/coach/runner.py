"""Scenario + pool → an end–cloud strategy's replication: the shared machinery of ``coach``,
``neurosurgeon``, ``dads``, ``spinn`` and ``jps``.

:func:`setup` finds the end device (the scenario's master unless named) and the cloud (the
fastest other device unless named), builds the :class:`EndCloudModel` of the chosen pool member
(memoised: the strategies of one comparison share its forward passes), times every layer on both
devices from the catalog and opens a cost model at the link's bandwidth at t = 0.

A strategy's :meth:`Planner.plan` chooses the partition (and bits) offline and returns a
:class:`Planned`; :func:`run_replication` draws the arrivals and frames for a seed, runs the
SimPy pipeline with the planner's per-task decisions, and turns the tasks into the common
request table (plus ``early_exit``, ``bits``, ``partition``, stage times and waits) and a
per-stage device table (busy, utilization, bubbles).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vip_ray.coach.calibrate import EndCloudModel
from vip_ray.coach.frames import frame_samples
from vip_ray.coach.offline import CostModel, StagePlan
from vip_ray.scenario import ScenarioError
from vip_ray.scenario.world import power, radio
from vip_ray.core import world as S
from vip_ray.core.streams import Arrivals


class EndCloudOptions(BaseModel):
    """Options every end–cloud strategy takes (``strategy.options.<name>``).

    * ``model`` — pool member to partition (default: the pool's first baseline, else its teacher).
    * ``end_device`` / ``cloud_device`` — device names (default: the master / the fastest other).
    * ``profile_size`` — input side (px) the layer costs and tensor sizes are profiled at
      (default: the member's nominal input size, e.g. 224; accuracy comes from the member at the
      size it was trained at).
    * ``speed_family`` — which ``macs_per_s_by_family`` entry of the device catalog times the
      layers (default: the member's family).
    * ``calibration_samples`` — calibration frames, a stratified part of the pool's held-out split
      (offline accuracy probes; half warm the caches/exit heads, half calibrate the online
      thresholds); the simulated frames come from the rest. Default: 400, at most half the split.
    * ``eps`` — accuracy-loss bound ε (fraction; COACH's 0.5 % is 0.005).
    """

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = None
    end_device: Optional[str] = None
    cloud_device: Optional[str] = None
    profile_size: Optional[int] = Field(default=None, ge=8)
    speed_family: Optional[str] = None
    calibration_samples: Optional[int] = Field(default=None, ge=20)
    eps: float = Field(default=0.005, ge=0.0, lt=1.0)


@dataclass
class Setup:
    """Everything a planner needs, fixed for a run."""

    scenario: Any
    pool: Any
    model: EndCloudModel
    end_name: str
    cloud_name: str
    link: S.LinkSpec
    t_end: np.ndarray
    t_cloud: np.ndarray
    cost: CostModel
    result_bytes: int
    deadline_s: float
    frame_interval_s: float | None
    eps: float
    file: str
    cloud_down: bool = False          # the cloud crashed at t = 0: every strategy runs all on the end
    end_power: Any = None             # vip_ray.core.power.PowerSpec of each side (None: no compute or idle energy)
    cloud_power: Any = None

    def cost_at(self, bandwidth_bps: float) -> CostModel:
        return CostModel(self.model.chain, self.t_end, self.t_cloud, bandwidth_bps)


@dataclass
class Planned:
    """A strategy's offline outcome: the plan(s) and the per-task decision machinery.

    ``decide_factory(samples)`` → ``(decide, answer[, answered])``: ``decide(i, now, bw, plan)`` →
    :class:`Decision`; ``answer(records, plans)`` → :class:`Outputs` from real outputs;
    ``answered(i, now, plan, decision)`` hears each answer that returns from the cloud.
    ``plan_for`` (optional) picks a task's plan when it starts (SPINN's dynamic split); ``meta``
    goes into the run summary.
    """

    plan: StagePlan
    decide_factory: Callable[[np.ndarray], tuple[Callable, Callable]]
    meta: dict = field(default_factory=dict)
    plan_for: Callable | None = None
    early_bits: int = 32              # bits of the tensors produced before a task's decision
    hold: bool = False                # those wait for the decision (an exit then sends nothing)


_MODELS: dict[tuple, EndCloudModel] = {}


def end_cloud_model(pool: Any, member_id: str, *, profile_size: int | None, calibration_samples: int,
                    input_bytes: int | None, log=None) -> EndCloudModel:
    """Memoised per pool, member, profile size, calibration size and frame bytes."""
    key = (str(pool.path), pool.manifest.created, member_id, profile_size, calibration_samples, input_bytes)
    if key not in _MODELS:
        if len(_MODELS) >= 4:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = EndCloudModel(pool, member_id, profile_size=profile_size,
                                     calibration_samples=calibration_samples, input_bytes=input_bytes, log=log)
    return _MODELS[key]


def _link(link: Any) -> S.LinkSpec:
    trace = tuple((t, mbps * 1e6) for t, mbps in (link.bandwidth_trace.points if link.bandwidth_trace else ()))
    return S.LinkSpec(rtt_s=link.rtt_ms / 1e3, bandwidth_bps=link.bandwidth_mbps * 1e6, loss=link.loss or 0.0,
                      bandwidth_trace=trace, radio=radio(getattr(link, "radio", None)))


def availability_refusal(scenario: Any, options: EndCloudOptions) -> str | None:
    """Why the end–cloud pipeline cannot run ``scenario``'s availability, known without a pool:
    the end device is not always available, or no cloud candidate (``cloud_device``, else every
    other device: the fastest is picked once the pool's member is known) is always available or
    crashed from t = 0. None when it may run; :func:`setup` checks the cloud it picks."""
    names = [d.name for d in scenario.devices]
    end_name = options.end_device or scenario.master.name
    if end_name not in names or len(names) < 2:
        return None                                   # setup() names the bad key
    end = scenario.device(end_name)
    if end.availability.kind != "always":
        return f"the end device {end_name} is not always available ({end.availability.kind})"
    powered = [d.name for d in scenario.devices if getattr(d, "battery_wh", None) is not None]
    if powered:   # the pipeline's devices never go down, so a battery would silently never run out
        return (f"devices ({powered[0]}).battery_wh: the end–cloud pipeline models always available devices "
                f"and drains no battery; allowed: unset (mains powered)")
    clouds = [scenario.device(options.cloud_device)] if options.cloud_device in names else \
        [d for d in scenario.devices if d.name != end_name]
    if all(d.availability.kind != "always" and not (d.availability.kind == "crash" and d.availability.at_s == 0.0)
           for d in clouds):
        kinds = ", ".join(f"{d.name}: {d.availability.kind}" for d in clouds)
        return f"the end–cloud pipeline needs an always available (or crashed from t = 0) cloud; got {kinds}"
    return None


def setup(scenario: Any, pool: Any, options: EndCloudOptions, *, name: str, file: str,
          log: Callable[[str], None] = print) -> Setup:
    prefix = f"strategy.options.{name}"
    names = [d.name for d in scenario.devices]
    if len(names) < 2:
        raise ScenarioError(f"{file}: devices: an end–cloud strategy needs an end device and a cloud server "
                            f"(got {len(names)} device)", file=file)
    end_name = options.end_device or scenario.master.name
    if end_name not in names:
        raise ScenarioError(f"{file}: {prefix}.end_device: no device {end_name!r}; allowed: {', '.join(names)}", file=file)
    from vip_ray.scenario.load import baseline_member

    member = baseline_member(pool, options.model, f"{prefix}.model", file=file)
    family = options.speed_family or member.family
    others = [d for d in scenario.devices if d.name != end_name]
    if options.cloud_device is not None:
        if options.cloud_device not in names or options.cloud_device == end_name:
            raise ScenarioError(f"{file}: {prefix}.cloud_device: {options.cloud_device!r} is not another device; "
                                f"allowed: {', '.join(d.name for d in others)}", file=file)
        cloud_name = options.cloud_device
    else:
        cloud_name = max(others, key=lambda d: d.speed(family) or 0.0).name
    end_dev, cloud_dev = scenario.device(end_name), scenario.device(cloud_name)
    av = cloud_dev.availability
    cloud_down = av.kind == "crash" and av.at_s == 0.0      # vip-sim compare's failed=N: run locally
    for d, role in ((end_dev, "end device"), (cloud_dev, "cloud")):
        if d.availability.kind != "always" and not (d is cloud_dev and cloud_down):
            raise ScenarioError(f"{file}: devices ({d.name}).availability: the end–cloud pipeline models an always "
                                f"available {role} (or a cloud crashed from t = 0); got {d.availability.kind!r} "
                                f"(for vip-sim compare: --stealing none, and --failed counts that crash the "
                                f"cloud at t = 0 or spare it)", file=file)
    # the link is the one between the two: the non-master's link in the star
    link_dev = cloud_dev if cloud_dev.role != "master" else end_dev
    link = _link(link_dev.link)
    in_bytes = scenario.workload.input_bytes
    t0 = time.perf_counter()
    n_cal = options.calibration_samples or min(400, len(pool.labels) // 2)
    try:
        model = end_cloud_model(pool, member.id, profile_size=options.profile_size,
                                calibration_samples=n_cal, input_bytes=in_bytes, log=log)
    except ValueError as e:
        raise ScenarioError(f"{file}: {prefix}: {e}", file=file) from None
    log(f"[{name}] {member.id}: {model.profile.n} layers, {model.profile.macs / 1e9:.2f} GMACs at "
        f"{model.profile.input_shape[1]} px ({time.perf_counter() - t0:.1f} s to load and profile)")
    try:
        t_end = model.profile.layer_times(end_dev, family=family, model_key=member.model)
        t_cloud = model.profile.layer_times(cloud_dev, family=family, model_key=member.model)
    except ValueError as e:
        raise ScenarioError(f"{file}: {prefix}.speed_family: {e}", file=file) from None
    times, rates = link.steps()
    cost = CostModel(model.chain, t_end, t_cloud, rates[0])
    w = scenario.workload
    interval = 1.0 / w.rate if w.rate else None
    return Setup(scenario, pool, model, end_name, cloud_name, link, t_end, t_cloud, cost,
                 result_bytes=4 * pool.num_classes, deadline_s=w.deadline_ms / 1e3, frame_interval_s=interval,
                 eps=options.eps, file=file, cloud_down=cloud_down,
                 end_power=power(getattr(end_dev, "power", None)), cloud_power=power(getattr(cloud_dev, "power", None)))


# ---------------------------------------------------------------------------------------------
# One replication
# ---------------------------------------------------------------------------------------------


def workload_times(scenario: Any, seed: int) -> np.ndarray:
    """Arrival times of a seed: the same stream the VP simulator draws for that seed."""
    w = scenario.workload
    if w.arrival == "trace":
        wl = S.WorkloadSpec("trace", times=tuple(w.trace.times_s), n_requests=w.requests, duration_s=w.duration_s,
                            deadline_s=w.deadline_ms / 1e3)
    else:
        wl = S.WorkloadSpec(w.arrival, rate_hz=w.rate, n_requests=w.requests, duration_s=w.duration_s,
                            deadline_s=w.deadline_ms / 1e3)
    arr = Arrivals(wl, seed)
    parts = []
    while not arr.done:
        parts.append(arr.take(1 << 16)[1])
    return np.concatenate(parts) if parts else np.empty(0)


def samples_for(scenario: Any, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    f = scenario.workload.frames
    return frame_samples(labels, n, np.random.default_rng([seed, 1]), run_length_mean=f.run_length_mean,
                         repeat_prob=f.repeat_prob)


@dataclass
class Outputs:
    """Per-task answers collected during the simulation."""

    pred: np.ndarray
    topm_hit: np.ndarray
    partition: list


def plain(value: Any) -> Any:
    """JSON-safe copy (numpy scalars and arrays to Python) for summaries."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value
