"""``vip-sim run FILE --engine serve``: a scenario's replications live on Ray Serve, into the
simulator's tables (``requests.parquet``, ``devices.parquet``; :mod:`vip_ray.core.tables`) plus
``serve_timing.parquet`` (per request: send lag, emulated finish, harness overhead) and
``jobs.parquet`` (per request and device: outcome, variant, each stage's emulated time; the simulator's
columns, :data:`vip_ray.core.breakdown.JOB_COLUMNS`).

Table semantics, where the emulation differs from the simulator:

* ``finish_s`` / ``latency_s`` are *measured* at the master (wall clock since the replication's
  epoch, divided by the time dilation X); they include the harness overhead, which
  ``serve_timing.parquet`` gives per request (``overhead_s`` = measured − emulated finish).
  ``emulated_latency_s`` (an extra column) is the latency on the emulated timeline alone — what
  the simulator would report for the same replies.
* ``deadline_met``: the *measured* latency is within the deadline (a reply the harness
  delivered late is late). When the harness overhead is a large share of the latency
  (``harness_overhead_share`` in ``summary.json`` above ``ServeOptions.tolerance``), the run
  warns: raise ``--time-dilation`` (or use ``auto``).
* ``responders``: the devices whose replies reached the master — emulated arrival by the
  deadline, and the message itself at most ``grace_ms`` late.
* ``devices.parquet`` counters are what the emulated devices counted; a killed replica's last
  ≤ 0.5 s of counting is lost with it (``restarts`` in ``summary.json`` says where).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd

from vip_ray.core.deployment import FanOut
from vip_ray.core.engine import Engine, Replication
from vip_ray.core.results import versions
from vip_ray.core.breakdown import JOB_COLUMNS
from vip_ray.core.breakdown import append_breakdown
from vip_ray.core.energy import request_energy
from vip_ray.core.tables import DEVICE_STAT_KEYS, INT_STATS, device_frame, request_frame
from vip_ray.serve.app import ServeEmulation, start_ray_for, stop_ray
from vip_ray.serve.config import DeployError, EmulationConfig, ServeOptions, build_config
from vip_ray.serve.emulated import available_time  # noqa: F401  (re-exported)
from vip_ray.serve.loadgen import Replay



def bank_inputs(pool: Any) -> np.ndarray:
    """The pool's held-out test images (N, C, H, W) uint8, in prediction-bank order: the very
    inputs the bank's logits were computed on (checked by the data fingerprint)."""
    from vip_ray.data import load_dataset

    cfg = (pool.manifest.config or {}).get("data")
    if not cfg:
        raise DeployError(f"pool {pool.name!r}: its manifest has no data config; the emulation needs the test images")
    data = load_dataset(cfg)
    want = pool.manifest.data.get("fingerprint")
    if want is not None and data.fingerprint() != want:
        raise DeployError(f"pool {pool.name!r}: data set {cfg.get('name')!r} no longer gives the test split the "
                            f"prediction bank was computed on (fingerprint {data.fingerprint()} != {want})")
    images = data.test_x.numpy()
    if len(images) != len(pool.labels) or not np.array_equal(data.test_y.numpy(), pool.labels):
        raise DeployError(f"pool {pool.name!r}: test split and prediction bank labels differ")
    return images


def pool_weights(pool: Any, cfg: EmulationConfig) -> dict[int, bytes]:
    """State-dict bytes of every variant the emulation places (checksummed when the pool opened);
    they travel to the replicas, so remote nodes need no copy of the pool store."""
    placed = sorted({v for d in cfg.devices for v in d.placed_variants()})
    return {v: (pool.path / pool.manifest.member(cfg.variants[v].id).weights).read_bytes() for v in placed}


class ServeEngine(Engine):
    """The live emulation as an engine: Ray and Serve start once (:meth:`open`), each
    deployment's app goes up when its world differs from the running one (a new seed alone
    reuses it), and every replication replays the workload in real time through it."""

    family = "serve"

    def __init__(self, name: str = "serve", options: ServeOptions | None = None, *, local_testing: bool = False,
                 log: Callable[[str], None] = print):
        super().__init__(name, options or ServeOptions())
        self.local_testing, self.log = local_testing, log
        self.own_ray = False
        self.dashboard_url: str | None = None
        self.emulation: ServeEmulation | None = None
        self.deployment: FanOut | None = None
        self.cfg: EmulationConfig | None = None
        self.images: np.ndarray | None = None
        self.extras: list[dict] = []
        self.calibration = None
        self.forward_cache: dict = {}   # the host's forward-pass times, measured once per variant
        self.staged = None                  # the running chain / pipeline app (vip_ray.serve.staged)

    def open(self) -> "ServeEngine":
        return self   # Ray starts with the first deployment, once its inputs are checked (time dilation)

    def _ensure_ray(self) -> None:
        if not self.local_testing:
            import ray

            if not ray.is_initialized():
                self.dashboard_url = start_ray_for(self.options)
                self.own_ray = True

    def close(self) -> None:
        try:
            if self.staged is not None:
                self.staged.stop()
                self.staged = None
            if self.emulation is not None:
                self.emulation.stop()
        finally:
            self.emulation = self.deployment = None
            if self.own_ray:
                self.own_ray = False
                stop_ray()

    def up(self, dep: FanOut) -> ServeEmulation:
        """The running emulation of ``dep`` (deployed now unless the running one has its world)."""
        if not isinstance(dep, FanOut):
            raise DeployError(f"the Serve engine runs fan-out deployments; strategy {dep.strategy!r} gives a "
                              f"{type(dep).__name__}")
        if self.deployment is not None and self.deployment.same_world(dep):
            return self.emulation
        if self.emulation is not None:
            self.emulation.stop()
            self.emulation = None
        if self.staged is not None:         # a chain / pipeline app of an earlier strategy: down first
            self.staged.stop()
            self.staged = None
        self.images = bank_inputs(dep.pool)
        cfg = build_config(dep, input_shape=self.images.shape[1:], options=self.options)
        cfg = replace(cfg, control=dep.control)   # the same policy object the simulator's master calls
        weights = pool_weights(dep.pool, cfg)
        cfg = self._dilate(cfg, weights)
        self._ensure_ray()
        emu = ServeEmulation(cfg, weights, local_testing=self.local_testing, log=self.log)
        emu.start()
        emu.dashboard_url = emu.dashboard_url or self.dashboard_url
        self.emulation, self.deployment, self.cfg = emu, dep, cfg
        self.log(f"[vip_ray] Serve app {cfg.app!r}: {len(cfg.devices)} emulated devices in {len(cfg.groups)} "
                 f"device-group replica(s)" + (f"; HTTP {emu.http_url}/predict" if emu.http_url else "")
                 + (f"; dashboard {emu.dashboard_url}" if emu.dashboard_url else ""))
        return emu

    def _dilate(self, cfg: EmulationConfig, weights: dict[int, bytes]) -> EmulationConfig:
        """``cfg`` at its time dilation (calibrated on this host's forward passes)."""
        from dataclasses import replace

        from vip_ray.serve.dilation import forwards_text, resolve

        x, cal = resolve(cfg, weights, cache=self.forward_cache)
        self.calibration = cal
        how = "auto" if cfg.options.time_dilation == "auto" else "given"
        self.log(f"[vip_ray] time dilation X = {x:g} ({how}; host forward passes {forwards_text(cal)}"
                 f"; the host needs X >= {cal.minimum:g}, auto picks {cal.auto:g})")
        if x < cal.minimum:
            self.log(f"[vip_ray] warning: at X = {x:g} the host's forward passes do not fit the emulated device "
                     f"times: replies will be late and latencies too long; use --time-dilation auto "
                     f"(X = {cal.auto:g})")
        return replace(cfg, dilation=x)

    def replicate(self, dep, *, replication: int, chunk_requests: int = 200_000) -> Replication:
        return Replication(self._replicate(dep, replication))

    def _replicate(self, dep: FanOut, replication: int):
        from vip_ray.serve.dilation import wall_estimate_s

        if not isinstance(dep, FanOut):     # a chain (mp) or an end–cloud pipeline: its own app
            out = yield from self._staged(dep, replication)
            return out
        emu = self.up(dep)

        def announce(times: np.ndarray) -> None:   # what the replication will cost, before it starts
            span = (float(times[-1]) if len(times) else 0.0) + self.cfg.workload.deadline_s
            self.log(f"[vip_ray] replication {replication}: {len(times)} requests over {span:.1f} emulated s "
                     f"≈ {wall_estimate_s(self.cfg, span):.0f} s wall at X = {self.cfg.dilation:g}")
        replay = emu.replicate(dep.seed, images=self.images, on_start=announce)
        t = replay_tables(self.cfg, replay, dep.labels, replication=replication)
        yield t.requests
        self.extras.append(t.extra)
        meta = {"placement": dep.placement(), **dep.meta}
        return t.devices, meta, {"serve_timing": t.timing, "jobs": t.jobs}

    def _staged(self, dep, replication: int):
        """One replication of a chain or pipeline deployment (:mod:`.chain`, :mod:`.pipeline`)."""
        from vip_ray.serve.staged import STAGED

        runner = STAGED.get(type(dep).kind)
        if runner is None:
            raise DeployError(f"the Serve engine cannot run {type(dep).__name__} deployments "
                              f"(strategy {dep.strategy!r})")
        if self.options.time_dilation != 1.0:   # a number (the CLI converts it) or "auto"
            raise DeployError("--time-dilation applies to the fan-out strategies (single, cp, vp, vip); "
                              f"strategy {dep.strategy!r} ({type(dep).__name__}) runs live in real time (X = 1)")
        if self.emulation is not None:      # a fan-out app of an earlier strategy: down first
            self.emulation.stop()
            self.emulation = self.deployment = None
        if self.staged is None or not self.staged.same(dep):
            if self.staged is not None:
                self.staged.stop()
            self.staged = runner(dep, self.options, images=bank_inputs(dep.pool), local_testing=self.local_testing,
                                 log=self.log).start()
        t = self.staged.replicate(dep, replication)
        yield t["requests"]
        self.extras.append(t["extra"])
        return t["devices"], t["meta"], t["tables"]

    def describe(self) -> dict:
        import dataclasses

        return {"name": self.name, "family": self.family, **versions(),
                "options": {k: v for k, v in dataclasses.asdict(self.options).items()},
                "time_dilation": self.cfg.dilation if self.cfg else None,
                "app": self.cfg.app if self.cfg else None,
                "groups": {g.name: [self.cfg.devices[i].name for i in g.devices] for g in self.cfg.groups}
                if self.cfg else {}}

    def run_summary(self) -> dict:
        emu, extras = self.emulation, self.extras
        self.extras = []
        over50 = _quantile_ms([e["overhead_s"] for e in extras], 0.5)
        lat50 = _quantile_ms([e["latency_s"] for e in extras if "latency_s" in e], 0.5)
        share = round(over50 / lat50, 4) if over50 is not None and lat50 else None
        tol = self.options.tolerance
        warning = None
        if share is not None and share > tol:
            warning = (f"the harness overhead is {100 * share:.1f} % of the p50 latency (more than "
                       f"{100 * tol:g} %): the measured latencies are the harness's as much as the world's; "
                       f"raise --time-dilation (auto picks {self.calibration.auto:g})" if self.calibration else "")
            self.log(f"[vip_ray] warning: {warning}")
        return {"serve": {"time_dilation": self.cfg.dilation if self.cfg else None,
                          "calibration": self.calibration.as_dict() if self.calibration else None,
                          "harness_overhead_share": share, "fidelity_warning": warning,
                          "app": self.cfg.app if self.cfg else None, "http_url": emu.http_url if emu else None,
                          "dashboard_url": emu.dashboard_url if emu else None,
                          "groups": {g.name: [self.cfg.devices[i].name for i in g.devices] for g in self.cfg.groups}
                          if self.cfg else {},
                          "harness_overhead_p50_ms": over50,
                          "harness_overhead_p99_ms": _quantile_ms([e["overhead_s"] for e in extras], 0.99),
                          "send_lag_p50_ms": _quantile_ms([e["send_lag_s"] for e in extras], 0.5),
                          "per_replication": [{k: v for k, v in e.items()
                                               if k not in ("overhead_s", "send_lag_s", "latency_s")}
                                              for e in extras], "versions": versions()}}

    def keep_serving(self, dep: FanOut, *, duration_s: float | None = None,
                     on_ready: Callable[[ServeEmulation], None] | None = None) -> dict:
        """Keep ``dep``'s emulation up for HTTP clients (no workload replayed) until Ctrl-C or
        ``duration_s`` seconds; ``on_ready(emulation)`` is called once it runs. Returns the last
        health report."""
        import signal
        import threading

        stop = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():  # Ctrl-C ends the wait, then the app goes down
            previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            emu = self.up(dep)
            cfg = self.cfg
            c, h, w = cfg.input_shape
            self.log(f"[vip_ray] Serve app {cfg.app!r} is up: {len(cfg.devices)} emulated devices in "
                     f"{len(cfg.groups)} device-group replica(s), strategy {cfg.strategy}\n"
                     f"  POST {emu.http_url}/predict   (PNG / JPEG, or a .npy uint8 array of shape ({c}, {h}, {w}))\n"
                     f"  GET  {emu.http_url}/health"
                     + (f"\n  dashboard http://{emu.dashboard_url}" if emu.dashboard_url else "")
                     + ("" if duration_s else "\n  Ctrl-C stops it"))
            if on_ready:
                on_ready(emu)
            stop.wait(duration_s)
            return emu.health()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def _quantile_ms(parts: list, q: float) -> float | None:
    x = np.concatenate(parts) if parts else np.empty(0)
    return _ms(np.quantile(x, q)) if len(x) else None


def _ms(x: float) -> float:
    return round(1e3 * float(x), 3)


class ReplayTables(NamedTuple):
    requests: pd.DataFrame
    devices: pd.DataFrame
    timing: pd.DataFrame
    jobs: pd.DataFrame
    extra: dict


def replay_tables(cfg: EmulationConfig, replay: Replay, labels: np.ndarray, *, replication: int) -> ReplayTables:
    """The frames of one replication (requests and devices as the simulator's; per-request timing;
    per-job outcomes) and its serve-specific figures."""
    res = replay.results
    r, d = len(res), len(cfg.devices)
    deadline = cfg.workload.deadline_s
    arrival = replay.arrival
    answered = np.array([x["answered"] for x in res], dtype=bool)
    finish = np.array([x["finish_s"] for x in res], dtype=np.float64)
    ideal = np.array([x["ideal_finish_s"] for x in res], dtype=np.float64)
    mask = np.zeros((r, d), dtype=bool)
    for i, x in enumerate(res):
        mask[i, x["responders"]] = True
    label = labels[replay.samples]
    pred = np.array([x["prediction"] for x in res], dtype=np.int64)
    top = np.array([x["top"] for x in res], dtype=np.int64).reshape(r, cfg.top_m)
    bytes_up = replay.final.get("bytes_up", {})
    req = request_frame(
        replication=replication, seed=replay.seed, request_id=np.arange(r), arrival_s=arrival,
        finish_s=np.where(answered, finish, np.nan), latency_s=np.where(answered, finish - arrival, np.nan),
        answered=answered, deadline_met=answered & (finish - arrival <= deadline + 1e-9),
        fallback=np.array([x["fallback"] for x in res], dtype=bool), responders=mask,
        device_names=cfg.device_names, sample=replay.samples, label=label, prediction=pred,
        correct_top1=answered & (pred == label), correct_topm=answered & (top == label[:, None]).any(axis=1),
        m=cfg.top_m, bytes_down=np.array([x["bytes_down"] for x in res], dtype=np.int64),
        bytes_up=np.array([bytes_up.get(i, 0) for i in range(r)], dtype=np.int64), strategy=cfg.strategy,
        engine="serve", emulated_latency_s=np.where(answered, ideal - arrival, np.nan))
    timing = pd.DataFrame({"replication": np.full(r, replication, dtype=np.int32), "request_id": np.arange(r),
                           "arrival_s": arrival, "send_lag_s": replay.send_lag_s,
                           "received_s": np.array([x["received_s"] for x in res], dtype=np.float64),
                           "emulated_finish_s": ideal, "finish_s": finish, "overhead_s": finish - ideal,
                           **{k: np.array([x.get(k, np.nan) for x in res], dtype=np.float64)
                              for k in ("answer_lead_s", "answer_path_s", "sent_s", "ready_s")}})
    last_end = max([ds["last_end"] for snap in replay.final.get("snapshots", []) for ds in snap["devices"].values()]
                   or [0.0])
    t_end = max(float(arrival[-1]) + deadline if r else 0.0, last_end)
    stats, restarts = device_stats(cfg, replay.final.get("snapshots", []), t_end)
    dev = device_frame(
        replication=replication, names=cfg.device_names, groups=[x.group for x in cfg.devices],
        roles=[x.role for x in cfg.devices],
        variants=[cfg.variants[x.first_slot.variant].id if x.first_slot else None for x in cfg.devices],
        service_ms=[1e3 * x.first_slot.service_s if x.first_slot else float("inf") for x in cfg.devices],
        macs_per_request=[cfg.variants[x.first_slot.variant].macs if x.first_slot else 0 for x in cfg.devices],
        stats=stats,
        span_s=t_end)
    extra = {"seed": replay.seed, "wall_s": round(replay.wall_s, 3), "restarts": restarts,
             "group_timeouts": replay.final.get("timeouts", {}), "group_errors": replay.final.get("errors", {}),
             "unresolved_jobs": replay.final.get("unresolved", 0),
             "send_lag_max_ms": _ms(replay.send_lag_s.max()) if r else None,
             "answer_lead_p50_ms": _ms(np.median(timing["answer_lead_s"])) if r else None,
             "answer_lead_max_ms": _ms(timing["answer_lead_s"].max()) if r else None,
             "overhead_s": finish - ideal, "send_lag_s": replay.send_lag_s,
             "latency_s": (finish - arrival)[answered]}
    # where the latency went (core/breakdown.py, the simulator's code): the decisive job's stages on
    # the emulated timeline; the measured finish after the emulated answer instant (the harness's
    # time) is t_aggregate_s, so that the seven columns sum to the measured latency_s
    stages = job_stages(replay.final.get("jobs", []), arrival, d)
    # the energy of the work done for each request, from its jobs' emulated times (core/energy.py,
    # the simulator's code): the same figure as the simulator's where the same jobs ran
    req["energy_j"] = request_energy([(cfg.devices, cfg.workload.input_bytes, r)], stages, mask, cfg.shared_medium)
    append_breakdown(req, stages, finish, mask, cfg.device_names, answer_at=ideal)
    return ReplayTables(req, dev, timing, jobs_frame(cfg, replay.final.get("jobs", []), replication), extra)


#: the fields of a job as the device groups record it (``Pending.jobs`` with the request first)
JOB_TUPLE = ("request_id", "device", "outcome", "reply_at", "variant", "input_at", "start", "end", "paused")


def _job_array(jobs: list[tuple]) -> np.ndarray:
    """(N, 9) float array of the job tuples (fields a group did not record: NaN)."""
    w = len(JOB_TUPLE)
    return np.array([tuple(j[:w]) + (np.nan,) * (w - len(j)) for j in jobs], dtype=np.float64).reshape(-1, w)


def job_stages(jobs: list[tuple], arrival: np.ndarray, d: int):
    """The replay's jobs as the (R, D) arrays of the simulator's results (``outcome``, ``reply_at``,
    ``ready_at``, ``start_at``, ``end_at``, ``paused_s``; NaN where no job was recorded, e.g. a killed replica's)."""
    from types import SimpleNamespace

    r = len(arrival)
    arr = _job_array(jobs)
    arr = arr[arr[:, 0] < r]
    rows, cols = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
    out = SimpleNamespace(arrival=np.asarray(arrival, dtype=np.float64))
    for name, k in (("outcome", 2), ("reply_at", 3), ("ready_at", 5), ("start_at", 6), ("end_at", 7),
                    ("paused_s", 8)):
        a = np.full((r, d), np.nan)
        a[rows, cols] = arr[:, k]
        setattr(out, name, a)
    return out


def jobs_frame(cfg: EmulationConfig, jobs: list[tuple], replication: int) -> pd.DataFrame:
    """Every (request, device) job of the replay as its device group recorded it, in the columns of
    the simulator's ``jobs.parquet`` (:data:`vip_ray.core.breakdown.JOB_COLUMNS`): the outcome
    (:class:`vip_ray.core.tables.Outcome`), when the reply reached the master (emulated; inf: never)
    and the variant that ran (-1: none); the stage times on the emulated timeline (the simulator's
    for the same jobs; inf: never reached that stage). Jobs of a killed replica are missing."""
    arr = _job_array(jobs)
    frame = pd.DataFrame({"replication": np.full(len(arr), replication, dtype=np.int32),
                          "request_id": arr[:, 0].astype(np.int64),
                          "device": pd.Categorical.from_codes(arr[:, 1].astype(np.int64),
                                                              categories=list(cfg.device_names)),
                          "variant": arr[:, 4].astype(np.int32), "outcome": arr[:, 2].astype(np.int8),
                          "input_at_s": arr[:, 5], "start_s": arr[:, 6], "end_s": arr[:, 7], "paused_s": arr[:, 8],
                          "reply_at_s": arr[:, 3]})
    return frame[list(JOB_COLUMNS)].sort_values(["request_id", "device"], ignore_index=True)


def device_stats(cfg: EmulationConfig, snapshots: list[dict], t_end: float) -> tuple[dict[str, np.ndarray], dict]:
    """Counters per device summed over its replica's incarnations (a killed replica's last
    snapshot, then its successor's); available time integrated over ``[0, t_end)`` from each
    incarnation's availability log, up to where the next one took over."""
    d = len(cfg.devices)
    stats = {k: np.zeros(d, dtype=np.int64 if k in INT_STATS else np.float64) for k in DEVICE_STAT_KEYS}
    per_dev: dict[int, list[tuple[dict, float]]] = {}
    for snap in snapshots:
        for key, ds in snap["devices"].items():
            per_dev.setdefault(int(key), []).append((ds, snap.get("now") or t_end))
    restarts = {}
    for i, incs in per_dev.items():
        incs.sort(key=lambda x: x[0]["born"])
        if len(incs) > 1:  # how many times, and when (emulated s) each successor joined the replication
            restarts[cfg.devices[i].name] = [round(ds["born"], 3) for ds, _ in incs[1:]]
        for j, (ds, seen) in enumerate(incs):
            for k in DEVICE_STAT_KEYS:
                if k != "available_s":
                    stats[k][i] += ds["stats"][k]
            end = t_end if j == len(incs) - 1 else min(seen, incs[j + 1][0]["born"])
            stats["available_s"][i] += available_time(ds["log"], min(end, t_end))
    return stats, restarts
