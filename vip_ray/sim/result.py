"""Engine output: per-request timing arrays, outcome codes, and the post-engine helpers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

# outcome codes and device counters are shared with the Serve emulation
from vip_ray.core.master import finish_times  # noqa: F401  (re-exported)
from vip_ray.core.tables import DEVICE_STAT_KEYS, Outcome, empty_device_stats  # noqa: F401  (re-exported)


#: the per-job stage-time arrays of a result
STAGE_FIELDS = ("ready_at", "start_at", "end_at", "paused_s")


@dataclass
class SimResult:
    """R requests (rows, arrival order) × D devices (columns, spec order).

    ``device_stats`` counts refer to the jobs of these R requests; ``available_s`` integrates
    availability over ``[t_start, t_end)``: a chunk covers from its first arrival (0 for the first
    chunk) to the next chunk's first arrival; the last chunk ends at
    ``max(last arrival + deadline_s, the time the last job left its device)``. Summing
    ``device_stats`` over the chunks of a run gives the run's totals.
    """

    request_id: np.ndarray          # (R,) int64
    arrival: np.ndarray             # (R,) float64
    reply_at: np.ndarray            # (R, D) float64, inf if no reply ever reached the master
    variant: np.ndarray             # (R, D) int32, variant of the slot active when service started; -1 if never started
    outcome: np.ndarray             # (R, D) int8, Outcome codes
    bytes_down: np.ndarray          # (R,) int64, downlink bytes on the wire for the request
    bytes_up: np.ndarray            # (R,) int64, uplink bytes on the wire for the request
    device_stats: Dict[str, np.ndarray] = field(default_factory=dict)
    events: int = 0                 # SimPy events processed (0 for engines without an event loop)
    wall_s: float = 0.0
    t_start: float = 0.0
    t_end: float = 0.0
    device_names: Tuple[str, ...] = ()
    engine: str = ""
    # each job's stage times (R, D) (vip_ray.core.breakdown): input at the device (inf: never got
    # there), service start (inf: never started), service end (inf: not completed), time paused by
    # the owner's work between them
    ready_at: Optional[np.ndarray] = None
    start_at: Optional[np.ndarray] = None
    end_at: Optional[np.ndarray] = None
    paused_s: Optional[np.ndarray] = None

    @property
    def n_requests(self) -> int:
        return len(self.request_id)

    @property
    def n_devices(self) -> int:
        return self.reply_at.shape[1]


def concat_results(parts: Iterable[SimResult]) -> SimResult:
    parts = list(parts)
    if not parts:
        raise ValueError("concat_results: no results")
    stats = {}
    for k in parts[0].device_stats:
        stats[k] = np.sum([p.device_stats[k] for p in parts], axis=0)
    cat = np.concatenate
    return SimResult(
        request_id=cat([p.request_id for p in parts]),
        arrival=cat([p.arrival for p in parts]),
        reply_at=cat([p.reply_at for p in parts]),
        variant=cat([p.variant for p in parts]),
        outcome=cat([p.outcome for p in parts]),
        bytes_down=cat([p.bytes_down for p in parts]),
        bytes_up=cat([p.bytes_up for p in parts]),
        device_stats=stats,
        events=sum(p.events for p in parts),
        wall_s=sum(p.wall_s for p in parts),
        t_start=parts[0].t_start,
        t_end=parts[-1].t_end,
        device_names=parts[0].device_names,
        engine=parts[0].engine,
        **{k: cat([getattr(p, k) for p in parts]) for k in STAGE_FIELDS if getattr(parts[0], k) is not None},
    )


def split_result(res: SimResult, chunk: int) -> List[SimResult]:
    """Split a whole-run result into chunks of ``chunk`` requests (stats go to the first chunk)."""
    out = []
    R = res.n_requests
    for i0 in range(0, max(R, 1), chunk):
        sl = slice(i0, min(R, i0 + chunk))
        out.append(SimResult(
            request_id=res.request_id[sl], arrival=res.arrival[sl], reply_at=res.reply_at[sl],
            variant=res.variant[sl], outcome=res.outcome[sl], bytes_down=res.bytes_down[sl],
            bytes_up=res.bytes_up[sl],
            device_stats=res.device_stats if i0 == 0 else {k: np.zeros_like(v) for k, v in res.device_stats.items()},
            events=res.events if i0 == 0 else 0, wall_s=res.wall_s if i0 == 0 else 0.0,
            t_start=res.t_start, t_end=res.t_end, device_names=res.device_names, engine=res.engine,
            **{k: getattr(res, k)[sl] for k in STAGE_FIELDS if getattr(res, k) is not None}))
    return out
