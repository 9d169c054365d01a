"""Where a request's latency went, and the per-job table: engine-neutral, from each job's stage
times (the (R, D) arrays ``ready_at``, ``start_at``, ``end_at``, ``paused_s`` beside ``reply_at``
that the simulator's kernels return; see :class:`vip_ray.sim.result.SimResult`).

The breakdown of an answered request follows its **decisive job**: of the replies the master
used, the one that arrived last (with a fallback, the fallback reply). With ``a`` the arrival,
``f`` the finish, and that job's input at the device ``r``, service start ``s``, end ``e``, time
paused by the owner's work ``p`` and reply at the master ``y``::

    t_down_s      = r - a          input on the downlink (queueing at the link, transfer, propagation)
    t_queue_s     = s - r          waiting in the device's queue (and for the owner, before starting)
    t_compute_s   = e - s - p      computing
    t_paused_s    = p              preempted by the owner's work (resume mode)
    t_up_s        = y - e          reply on the uplink
    t_wait_s      = f - y          the master waiting after it: for the deadline (a device it waited
                                   for did not reply in time), 0 when this reply completed the answer
    t_aggregate_s = 0              aggregating (instantaneous in the model)

so that they sum to ``latency_s = f - a`` (to rounding, 1e-9 s and far below); the decisive
job's device is ``decisive_device``. An unanswered request has NaN everywhere. An engine without
stage times writes NaN.

A live engine's stages are emulated while its ``f`` is measured: given the instant ``g`` at
which the model's master answers (``answer_at``: the emulated finish), ``t_wait_s = min(f, g) - y``
and ``t_aggregate_s = f - min(f, g)`` — the master's own time after the model's answer instant
(the harness: messages, aggregating, Python), never negative; a master that answered before the
emulated deadline (it stops waiting a little early so that its answer leaves in time) shortens the
wait instead. Without ``answer_at`` (the simulator) ``g = f``: the definitions above.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

#: the breakdown columns appended to ``requests.parquet`` (after the existing ones)
BREAKDOWN_COLUMNS = ("t_down_s", "t_queue_s", "t_compute_s", "t_paused_s", "t_up_s", "t_wait_s", "t_aggregate_s")
#: the per-job table ``jobs.parquet``, the same in every engine (NaN: the engine does not know)
JOB_COLUMNS = ("replication", "request_id", "device", "variant", "outcome", "input_at_s", "start_s", "end_s",
               "paused_s", "reply_at_s")
#: jobs kept in ``jobs.parquet`` per replication: beyond this the table holds the first ones (the
#: summary says how many it left out), so that a city-sized run stays within memory
JOBS_LIMIT = 2_000_000


def has_stages(timing: Any) -> bool:
    return getattr(timing, "ready_at", None) is not None


def breakdown(timing: Any, finish: np.ndarray, use: np.ndarray, answer_at: np.ndarray | None = None
              ) -> dict[str, np.ndarray]:
    """The :data:`BREAKDOWN_COLUMNS` of rows whose used replies are ``use`` (R, D) and whose
    answer came at ``finish`` (R,) (``answer_at`` (R,): the model's answer instant, live)."""
    r = len(finish)
    out = {c: np.full(r, np.nan) for c in BREAKDOWN_COLUMNS}
    if not has_stages(timing) or not r:
        return out
    rows = np.flatnonzero(use.any(axis=1))
    if not len(rows):
        return out
    k = np.where(use[rows], timing.reply_at[rows], -np.inf).argmax(axis=1)
    arrival = timing.arrival[rows]
    ready, start, end = timing.ready_at[rows, k], timing.start_at[rows, k], timing.end_at[rows, k]
    paused, reply = timing.paused_s[rows, k], timing.reply_at[rows, k]
    out["t_down_s"][rows] = ready - arrival
    out["t_queue_s"][rows] = start - ready
    out["t_compute_s"][rows] = end - start - paused
    out["t_paused_s"][rows] = paused
    out["t_up_s"][rows] = reply - end
    if answer_at is None:
        out["t_wait_s"][rows] = finish[rows] - reply
        out["t_aggregate_s"][rows] = 0.0
    else:
        due = np.minimum(finish[rows], answer_at[rows])
        out["t_wait_s"][rows] = due - reply
        out["t_aggregate_s"][rows] = finish[rows] - due
    return out


def decisive(timing: Any, use: np.ndarray) -> np.ndarray:
    """(R,) column of each request's decisive job (-1: none)."""
    out = np.full(len(use), -1, dtype=np.int64)
    rows = np.flatnonzero(use.any(axis=1))
    if len(rows):
        out[rows] = np.where(use[rows], timing.reply_at[rows], -np.inf).argmax(axis=1)
    return out


def append_breakdown(frame, timing: Any, finish: np.ndarray, use: np.ndarray, names: Sequence[str] = (),
                     answer_at: np.ndarray | None = None):
    """``frame`` with the breakdown columns and ``decisive_device`` (the decisive job's device;
    ``names``: the devices, or for stacked cells ``[(rows, names), ...]``; ``answer_at``: see
    :func:`breakdown`)."""
    import pandas as pd

    for c, v in breakdown(timing, finish, use, answer_at).items():
        frame[c] = v
    if len(names) and isinstance(names[0], tuple):      # cells: their devices' names, one after another
        labels, codes, at = [], [], 0
        for rows, cell_names in names:
            k = decisive(SimpleNamespace(reply_at=timing.reply_at[at:at + rows]), use[at:at + rows])
            codes.append(np.where(k >= 0, k + len(labels), -1))
            labels += list(cell_names)
            at += rows
        uniq = list(dict.fromkeys(labels))
        remap = np.array([uniq.index(n) for n in labels] + [-1], dtype=np.int64)
        frame["decisive_device"] = pd.Categorical.from_codes(remap[np.concatenate(codes)], categories=uniq)
    else:
        frame["decisive_device"] = pd.Categorical.from_codes(decisive(timing, use), categories=list(names))
    return frame


def ensure_breakdown(rows):
    """``rows`` with the breakdown columns, NaN where an engine or a strategy does not report them."""
    import pandas as pd

    for c in BREAKDOWN_COLUMNS:
        if c not in rows:
            rows[c] = np.nan
    if "decisive_device" not in rows:
        rows["decisive_device"] = pd.Categorical.from_codes(np.full(len(rows), -1), categories=[])
    return rows


class BreakdownStats:
    """Mean of each breakdown column over a replication's answered requests (``summary.json``:
    ``<column>_mean``, e.g. ``t_queue_s_mean``), chunk by chunk."""

    def __init__(self) -> None:
        self.sums = np.zeros(len(BREAKDOWN_COLUMNS))
        self.n = 0

    def add(self, rows) -> None:
        b = rows[list(BREAKDOWN_COLUMNS)].to_numpy(np.float64)
        ok = ~np.isnan(b).any(axis=1)
        self.sums += b[ok].sum(axis=0)
        self.n += int(ok.sum())

    def figures(self) -> dict[str, float]:
        nan = float("nan")
        return {f"{c}_mean": float(v / self.n) if self.n else nan for c, v in zip(BREAKDOWN_COLUMNS, self.sums)}


def job_columns(*, replication: int, request_id: np.ndarray, variant: np.ndarray, outcome: np.ndarray,
                reply_at: np.ndarray, input_at=None, start=None, end=None, paused=None,
                devices: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """:data:`JOB_COLUMNS` of the jobs given as (R, D) arrays, as numpy arrays (one row per job,
    request-major; the jobs a multi-master request never sent are left out; stage times ``None``:
    NaN); ``device`` holds codes: ``devices[column]`` (default: the column)."""
    from vip_ray.core.tables import Outcome

    keep = np.asarray(outcome) != Outcome.NOT_SENT
    rows, cols = np.nonzero(keep)
    nan = np.full(len(rows), np.nan)

    def cells(a):
        return nan if a is None else np.asarray(a, dtype=np.float64)[rows, cols]

    return {"replication": np.full(len(rows), replication, dtype=np.int32),
            "request_id": np.asarray(request_id, dtype=np.int64)[rows],
            "device": cols if devices is None else np.asarray(devices)[cols],
            "variant": np.asarray(variant, dtype=np.int32)[rows, cols],
            "outcome": np.asarray(outcome, dtype=np.int8)[rows, cols],
            "input_at_s": cells(input_at), "start_s": cells(start), "end_s": cells(end), "paused_s": cells(paused),
            "reply_at_s": cells(reply_at)}


def jobs_frame(columns: dict[str, np.ndarray], device_names: Sequence[str]):
    """The jobs table of :func:`job_columns`' arrays, ``device`` a categorical of ``device_names``."""
    import pandas as pd

    return pd.DataFrame({**columns, "device": pd.Categorical.from_codes(
        columns["device"], dtype=pd.CategoricalDtype(list(device_names)))})[list(JOB_COLUMNS)]


def job_frame(*, device_names: Sequence[str], **arrays):
    """:func:`job_columns` of ``arrays`` as a table (``device_names``: the columns' devices)."""
    return jobs_frame(job_columns(**arrays), device_names)


class JobsTable:
    """The jobs of one replication, chunk by chunk, up to :data:`JOBS_LIMIT` rows (kept as arrays:
    one table is built at the end, not one per chunk — a city has a thousand cells)."""

    def __init__(self, replication: int, names: Sequence[str]):
        self.replication, self.names = replication, list(names)
        self.parts: list[dict[str, np.ndarray]] = []
        self.kept = self.left_out = 0

    def add(self, timing: Any, request_offset: int = 0, devices: np.ndarray | None = None) -> None:
        """The jobs of ``timing`` (request ids + ``request_offset``; ``devices``: its columns'
        indices among the table's devices, default all of them in order)."""
        n = timing.reply_at.size
        room = JOBS_LIMIT - self.kept
        if room <= 0:
            self.left_out += n
            return
        take = len(timing.request_id) if n <= room else room // max(1, timing.reply_at.shape[1])
        sl = slice(0, take)

        def part(name):
            a = getattr(timing, name, None)
            return None if a is None else a[sl]

        cols = job_columns(replication=self.replication, request_id=timing.request_id[sl] + request_offset,
                           devices=devices, variant=timing.variant[sl], outcome=timing.outcome[sl],
                           reply_at=timing.reply_at[sl], input_at=part("ready_at"), start=part("start_at"),
                           end=part("end_at"), paused=part("paused_s"))
        self.parts.append(cols)
        self.kept += len(cols["request_id"])
        self.left_out += n - take * timing.reply_at.shape[1]

    def frame(self):
        if not self.parts:
            empty = np.zeros((0, len(self.names)))
            return job_frame(replication=self.replication, request_id=np.zeros(0, np.int64),
                             device_names=self.names, variant=empty, outcome=empty, reply_at=empty)
        return jobs_frame({c: np.concatenate([p[c] for p in self.parts]) for c in self.parts[0]}, self.names)
