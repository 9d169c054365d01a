"""Discrete-event engine for variant parallelism: a numeric spec in, per-request timing out.

>>> from vip_ray.sim import SimSpec, DeviceSpec, VariantSlot, LinkSpec, WorkloadSpec, run, finish_times
>>> spec = SimSpec(devices=(DeviceSpec("tv", (VariantSlot(0.0, 0, 0.01),), link=LinkSpec(0.002, 1e6)),),
...                workload=WorkloadSpec("poisson", rate_hz=10, n_requests=100, deadline_s=0.1))
>>> res = run(spec)                      # engine: "fast" (default), "loop", "numpy", "jit", "reference"
>>> finish, responded = finish_times(res, spec.workload.deadline_s)

Aggregation, placement and accuracy live elsewhere; the engine only times the jobs. Every engine
gives bit-identical per-request arrays (``reference`` is idiomatic SimPy and the oracle).

Model and semantics
-------------------
* Arrivals: Poisson (gaps Exp(1/rate)), periodic (first at t = 0, then every 1/rate), or a trace;
  ``n_requests`` and/or ``duration_s`` (arrivals at t < duration_s). Arrival i is
  ``arrival[i-1] + gap_i`` (sequential float addition from 0, as SimPy's ``now + delay``).
* Master: at its arrival each request is multicast to every device (placed or not). Switched
  links: each device's downlink is a FIFO that serialises ``input_bytes*8 / bandwidth`` then
  propagates ``rtt/2``. Shared medium: one FIFO broadcast per request serves every networked device,
  at each instant at the slowest networked link's rate; each device then adds its own ``rtt/2``
  and draws its own loss; ``bytes_down`` counts one copy. Uplinks are always per link.
* Bandwidth steps: a transmission in progress continues at the new rate for its remaining bits
  (both directions follow the link's step function; a step at t = 0 replaces ``bandwidth_bps``).
* Loss: each transmission (input copy, reply) is lost with probability ``loss`` after it has
  occupied the link; lost bytes still count as sent. Lost input → ``LOST_DOWN``; lost reply →
  ``LOST_UP`` (the device did the work).
* Device: one server, FIFO queue. A job starts at ``max(arrival at device, server free)``, moved to
  the next availability window if the device is down. The slot active at that (first) start gives
  the variant and the mean compute time; compute time = ``service_s`` × jitter draw (mean 1:
  deterministic 1; exponential; lognormal with cv ``jitter_cv``) × ``straggler_factor`` with
  probability ``straggler_prob``. No variant placed (slot variant −1, ``service_s`` inf, or before
  a first slot that starts after 0) → ``UNPLACED``, server free at once. ``drop_expired``: a job
  whose start would be strictly after ``arrival + deadline_s`` is skipped (``EXPIRED_SKIPPED``).
* Availability (``onoff`` starts free at t = 0; ``trace`` gives the busy intervals): the owner's
  work preempts the job in service — ``resume`` continues its remaining work at the next free
  window, ``drop`` loses it (``PREEMPT_DROPPED``); queued jobs wait. ``crash``/``mtbf`` failure:
  the job in service and every queued job are lost (``CRASHED``), jobs arriving while down are lost,
  after an MTBF repair the device restarts empty.
* Ties at the same instant: availability changes come first. A job whose work ends exactly when
  the owner arrives or the device fails has completed; a job arriving exactly then finds the
  device down; arriving exactly when it comes back finds it up. Equal-time jobs keep request order.
* Reply: uplink FIFO serialises ``reply_bytes`` then ``rtt/2``; the local variant (``link=None``)
  replies at its finish time. ``reply_at`` is ``inf`` for every outcome but ``REPLIED``.
* ``variant`` is the slot's variant for every job that started service (also when it was later
  dropped, crashed or its reply lost), −1 otherwise.
* Randomness: see :mod:`vip_ray.sim.random_streams` (streams keyed by (seed, purpose, device),
  per-request draws indexed by request id, fixed blocks — independent of engine and chunking).
"""
from .engine import ENGINES, FAST_NUMPY_FROM, register_engine, run, run_chunks
from .random_streams import Purpose
from .result import DEVICE_STAT_KEYS, Outcome, SimResult, concat_results, finish_times
from vip_ray.core.world import Availability, DeviceSpec, LinkSpec, SimSpec, VariantSlot, WorkloadSpec

__all__ = [
    "Availability", "DeviceSpec", "LinkSpec", "SimSpec", "VariantSlot", "WorkloadSpec",
    "ENGINES", "FAST_NUMPY_FROM", "register_engine", "run", "run_chunks",
    "Outcome", "SimResult", "DEVICE_STAT_KEYS", "concat_results", "finish_times", "Purpose",
]
