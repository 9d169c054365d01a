"""Time dilation X for the live engine (time-warped emulation, Gupta et al., NSDI 2006).

The emulated devices are often much faster than the host that emulates them: a Jetson runs a
VP variant in 0.06–0.15 ms, the host's real forward pass of it takes ≈ 2 ms. Replayed in real
time, the real outputs arrive late and the harness's own round trip (Serve handle calls, event
loops: a few ms) is a large share of a 12 ms latency. Running the emulated world X times slower
than wall time (device times, RTTs, transfers, deadline, arrivals) gives the host's work X times
more room, and divides the harness's share by X; the device model is unchanged in emulated time.

``auto`` calibrates: it times the host's batch-1 forward pass of every placed variant (as the
replicas run them) and picks the smallest X that satisfies, with a safety margin,

* **fit** — every device's real output is ready when its reply reaches the master on the
  emulated timeline: the forward passes of one request (one per distinct variant and device
  group, earliest need first, on the replicas' inference threads) done by ``X · b_d``, where
  ``b_d`` is device ``d``'s emulated time from a request's arrival to its reply at the master
  without queueing (RTT + transfers + service);
* **throughput** — the host's forward passes keep up with the wall-clock request rate (rate / X)
  at ≤ 50 % utilisation;
* **harness** — ``harness_ms`` (the harness's round trip, wall) is at most ``tolerance`` of the
  emulated latency (the latest ``b_d`` the master waits for, at most the deadline).

An explicit X below the fit/throughput minimum is refused with the measured minimum.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from vip_ray.errors import UserError
from vip_ray.serve.config import EmulationConfig

MARGIN = 1.5          # auto's safety factor on the measured forward passes (load, jitter)
UTILIZATION = 0.5     # the host's forward passes may keep the inference threads this busy


class DilationError(UserError):
    """An impossible ``--time-dilation``."""


@dataclass(frozen=True)
class Calibration:
    forward_ms: dict[str, float]     # variant id -> the host's batch-1 forward pass (median, wall ms)
    budget_ms: dict[str, float]      # device -> emulated ms from arrival to its reply at the master
    workers: int                     # forward passes that run at once (inference threads, capped by CPUs)
    fit_min: float                   # X at which one request's forward passes fit the budgets
    throughput_min: float            # X at which the forward passes keep up with the request rate
    harness_min: float               # X at which harness_ms is tolerance of the emulated latency
    auto: float                      # what ``auto`` picks

    @property
    def minimum(self) -> float:
        """The smallest X the host can honour (no margin)."""
        return max(self.fit_min, self.throughput_min)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "minimum": self.minimum}


def budgets(cfg: EmulationConfig) -> dict[int, float]:
    """Device index -> emulated seconds from a request's arrival to its reply at the master,
    without queueing (devices with no variant placed are left out)."""
    out = {}
    for i, d in enumerate(cfg.devices):
        slot = d.first_slot
        if slot is None or not slot.placed:
            continue
        b = slot.service_s
        if d.link is not None:
            b += d.link.rtt_s + 8.0 * (cfg.workload.input_bytes + d.reply_bytes) / d.link.bandwidth_bps
        out[i] = b
    return out


def forward_times(cfg: EmulationConfig, weights: dict[int, bytes], repeats: int = 15,
                  cache: dict | None = None) -> dict[int, float]:
    """Variant index -> median wall seconds of the host's batch-1 forward pass, run as the device
    groups run it (one torch thread, ``options.inference``). ``cache`` keeps them across
    deployments of one engine (keyed by the variant's identity and the input shape)."""
    import numpy as np
    import torch

    from vip_ray.serve.device import load_models

    placed = sorted({v for d in cfg.devices for v in d.placed_variants()})
    key = {v: (cfg.variants[v].id, cfg.variants[v].model, repr(sorted(cfg.variants[v].build.items())),
               tuple(cfg.input_shape), cfg.options.inference) for v in placed}
    if cache is not None and all(key[v] in cache for v in placed):
        return {v: cache[key[v]] for v in placed}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = load_models(cfg, placed, weights)
        x = torch.zeros((1,) + tuple(cfg.input_shape))
        out = {}
        with torch.inference_mode():
            for v, model in models.items():
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - t0)
                out[v] = float(np.median(times))
                if cache is not None:
                    cache[key[v]] = out[v]
        return out
    finally:
        torch.set_num_threads(threads)


def calibrate(cfg: EmulationConfig, forward_s: dict[int, float]) -> Calibration:
    """The three minima of the module docstring from measured forward passes ``forward_s``."""
    opts = cfg.options
    b = budgets(cfg)
    workers = max(1, min(opts.inference_threads * len(cfg.groups), os.cpu_count() or 1))
    # one forward pass per distinct (group, variant) a request needs, earliest need first
    need: dict[tuple[int, int], float] = {}
    for gi, g in enumerate(cfg.groups):
        for i in g.devices:
            if i in b:
                v = cfg.devices[i].first_slot.variant
                need[gi, v] = min(need.get((gi, v), math.inf), b[i])
    fit = 0.0
    done = 0.0
    longest = 0.0
    for (gi, v), due in sorted(need.items(), key=lambda kv: kv[1]):
        done += forward_s[v]
        longest = max(longest, forward_s[v])
        fit = max(fit, max(done / workers, longest) / due if due > 0 else math.inf)
    work = sum(forward_s[v] for (_, v) in need)
    rate = _rate_hz(cfg)
    throughput = rate * work / workers / UTILIZATION
    waited = [b[i] for i in b]
    latency = min(max(waited, default=cfg.workload.deadline_s), cfg.workload.deadline_s)
    harness = (opts.harness_ms / 1e3) / (opts.tolerance * latency) if latency > 0 else 0.0
    auto = _round_up(max(MARGIN * fit, MARGIN * throughput, harness, 1e-3))
    return Calibration(forward_ms={cfg.variants[v].id: round(1e3 * t, 4) for v, t in forward_s.items()},
                       budget_ms={cfg.devices[i].name: round(1e3 * t, 4) for i, t in b.items()},
                       workers=workers, fit_min=_round_up(fit), throughput_min=_round_up(throughput),
                       harness_min=_round_up(harness), auto=auto)


def resolve(cfg: EmulationConfig, weights: dict[int, bytes], *, source: str = "--time-dilation",
            cache: dict | None = None) -> tuple[float, Calibration]:
    """X for ``cfg.options.time_dilation`` (a number, or ``auto``), and the calibration it rests on.
    An explicit X below what the host can honour raises :class:`DilationError`."""
    cal = calibrate(cfg, forward_times(cfg, weights, cache=cache))
    return choose(cfg.options.time_dilation, cal, source), cal


def choose(want: float | str, cal: Calibration, source: str = "--time-dilation") -> float:
    """X for the requested ``want`` (``auto`` or a number). X = 1 (real time, the default) is
    never refused — the run warns instead; another X below the host's minimum is."""
    if want == "auto":
        return cal.auto
    x = float(want)
    if not (x > 0 and math.isfinite(x)):
        raise DilationError(f"{source}: expected a number > 0 or 'auto', got {want!r}")
    if x < cal.minimum and x != 1.0:
        raise DilationError(f"{source}: {x:g} is too small for this host: its forward passes need X >= "
                            f"{cal.minimum:g} (measured: {forwards_text(cal)}); use {cal.auto:g} or 'auto'")
    return x


def forwards_text(cal: Calibration) -> str:
    """The host's measured forward passes, for a message."""
    return ", ".join(f"{k} {v:.2f} ms" for k, v in cal.forward_ms.items())


def _rate_hz(cfg: EmulationConfig) -> float:
    w = cfg.workload
    if w.rate_hz:
        return float(w.rate_hz)
    if len(w.times) > 1:
        return (len(w.times) - 1) / max(w.times[-1] - w.times[0], 1e-9)
    return 0.0


def _round_up(x: float) -> float:
    """Up to two significant digits (a readable factor that is never below the need)."""
    if x <= 0 or not math.isfinite(x):
        return x
    e = math.floor(math.log10(x)) - 1
    return round(math.ceil(x / 10 ** e - 1e-9) * 10 ** e, max(0, -e))


def wall_estimate_s(cfg: EmulationConfig, emulated_s: float, lead_s: float = 1.0) -> float:
    """Wall seconds a replication of ``emulated_s`` emulated seconds takes at ``cfg.dilation``."""
    return lead_s + cfg.dilation * emulated_s
