"""``vip-sim run FILE --engine serve``: a scenario's replications live on Ray Serve, into the
simulator's tables (``requests.parquet``, ``devices.parquet``; :mod:`vip_ray.tables`) plus
``serve_timing.parquet`` (per request: send lag, emulated finish, harness overhead) and
``serve_jobs.parquet`` (per request and device: outcome, emulated reply time, variant).

Table semantics, where the emulation differs from the simulator:

* ``finish_s`` / ``latency_s`` are *measured* at the master (wall clock since the replication's
  epoch); they include the harness overhead, which ``serve_timing.parquet`` gives per request
  (``overhead_s`` = measured − emulated finish).
* ``deadline_met``: the answer was formed by the deadline on the emulated timeline (so the
  harness's last millisecond does not turn answered-at-the-deadline requests into misses).
* ``responders``: the devices whose replies reached the master — emulated arrival by the
  deadline, and the message itself at most ``grace_ms`` late.
* ``devices.parquet`` counters are what the emulated devices counted; a killed replica's last
  ≤ 0.5 s of counting is lost with it (``restarts`` in ``summary.json`` says where).
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd

from vip_ray.placement.plan import PlacementPlan
from vip_ray.pool import Pool
from vip_ray.scenario import Scenario, ScenarioError
from vip_ray.serve.app import ServeEmulation
from vip_ray.serve.config import EmulationConfig, ServeOptions, build_config
from vip_ray.serve.loadgen import Replay
from vip_ray.tables import (DEVICE_STAT_KEYS, INT_STATS, ReplicationStats, device_frame, request_frame,
                            requests_arrow, summarize)

REQUESTS_FILE, DEVICES_FILE = "requests.parquet", "devices.parquet"
TIMING_FILE, JOBS_FILE = "serve_timing.parquet", "serve_jobs.parquet"


def bank_inputs(pool: Pool) -> np.ndarray:
    """The pool's held-out test images (N, C, H, W) uint8, in prediction-bank order: the very
    inputs the bank's logits were computed on (checked by the data fingerprint)."""
    from vip_ray.data import load_dataset

    cfg = (pool.manifest.config or {}).get("data")
    if not cfg:
        raise ScenarioError(f"pool {pool.name!r}: its manifest has no data config; the emulation needs the test images")
    data = load_dataset(cfg)
    want = pool.manifest.data.get("fingerprint")
    if want is not None and data.fingerprint() != want:
        raise ScenarioError(f"pool {pool.name!r}: data set {cfg.get('name')!r} no longer gives the test split the "
                            f"prediction bank was computed on (fingerprint {data.fingerprint()} != {want})")
    images = data.test_x.numpy()
    if len(images) != len(pool.labels) or not np.array_equal(data.test_y.numpy(), pool.labels):
        raise ScenarioError(f"pool {pool.name!r}: test split and prediction bank labels differ")
    return images


def pool_weights(pool: Pool, cfg: EmulationConfig) -> dict[int, bytes]:
    """State-dict bytes of every variant the emulation places (checksummed when the pool opened);
    they travel to the replicas, so remote nodes need no copy of the pool store."""
    placed = sorted({v for d in cfg.devices for _, v, _ in d.slots})
    return {v: (pool.path / pool.manifest.member(cfg.variants[v].id).weights).read_bytes() for v in placed}


def _emulation(scenario: Scenario, pool: Pool, options: ServeOptions | None, plan: PlacementPlan | None,
               log: Callable[[str], None]) -> tuple[EmulationConfig, np.ndarray, ServeEmulation]:
    """The emulation's config, the bank's test images and the (not yet started) emulation."""
    images = bank_inputs(pool)
    cfg = build_config(scenario, pool, input_shape=images.shape[1:], options=options or ServeOptions(), plan=plan)
    return cfg, images, ServeEmulation(cfg, pool_weights(pool, cfg), log=log)


def run_serve(scenario: Scenario, pool: Pool, out_dir: Path, *, options: ServeOptions | None = None,
              plan: PlacementPlan | None = None, progress: Callable[[int], None] | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every replication live (``plan``: what runs where; default: the scenario's placement);
    write the tables into ``out_dir``; return the summary."""
    cfg, images, emulation = _emulation(scenario, pool, options, plan, log)
    requests, devices, timing, jobs, figures, extras = [], [], [], [], [], []
    with emulation as emu:
        log(f"[vip_ray] Serve app {cfg.app!r}: {len(cfg.devices)} emulated devices in {len(cfg.groups)} "
            f"device-group replica(s); HTTP {emu.http_url}/predict"
            + (f"; dashboard {emu.dashboard_url}" if emu.dashboard_url else ""))
        for rep in range(scenario.seeds.replications):
            seed = scenario.seeds.base + rep
            replay = emu.replicate(seed, images=images, progress=progress)
            t = replay_tables(cfg, replay, pool.labels, replication=rep)
            stats = ReplicationStats()
            stats.add(t.requests)
            figures.append(stats.figures())
            requests.append(t.requests)
            devices.append(t.devices)
            timing.append(t.timing)
            jobs.append(t.jobs)
            extras.append(t.extra)
        http_url, dashboard = emu.http_url, emu.dashboard_url
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.concat_tables([requests_arrow(r) for r in requests]), out_dir / REQUESTS_FILE)
    pd.concat(devices, ignore_index=True).to_parquet(out_dir / DEVICES_FILE, index=False)
    tim = pd.concat(timing, ignore_index=True)
    tim.to_parquet(out_dir / TIMING_FILE, index=False)
    pd.concat(jobs, ignore_index=True).to_parquet(out_dir / JOBS_FILE, index=False)
    summary = summarize(figures, cfg.workload.deadline_s)
    over = tim["overhead_s"].to_numpy()
    summary.update({
        "scenario": scenario.name, "pool": pool.name, "engine": "serve", "strategy": scenario.strategy.name,
        "macs_per_device_max": int(max(devices[0]["macs_per_request"].max(), 0)),
        "placement": {rep: {d.name: [cfg.variants[d.slots[0][1]].id if d.slots else None,
                                     d.slots[0][0] if d.slots else 0.0] for d in cfg.devices}
                      for rep in range(scenario.seeds.replications)},
        "serve": {"app": cfg.app, "http_url": http_url, "dashboard_url": dashboard,
                  "groups": {g.name: [cfg.devices[i].name for i in g.devices] for g in cfg.groups},
                  "harness_overhead_p50_ms": _ms(np.quantile(over, 0.5)) if len(over) else None,
                  "harness_overhead_p99_ms": _ms(np.quantile(over, 0.99)) if len(over) else None,
                  "send_lag_p50_ms": _ms(tim["send_lag_s"].median()) if len(tim) else None,
                  "per_replication": extras, "versions": versions()}})
    return summary


def keep_serving(scenario: Scenario, pool: Pool, *, options: ServeOptions | None = None,
                 plan: PlacementPlan | None = None, duration_s: float | None = None,
                 log: Callable[[str], None] = print, on_ready: Callable[[ServeEmulation], None] | None = None) -> dict:
    """Keep the emulation up for HTTP clients (no workload replayed) until Ctrl-C or ``duration_s``
    seconds; ``on_ready(emulation)`` is called once it runs. Returns the last health report."""
    import signal
    import threading

    cfg, _, emulation = _emulation(scenario, pool, options, plan, log)
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():  # Ctrl-C ends the wait, then the app goes down
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with emulation as emu:
            c, h, w = cfg.input_shape
            log(f"[vip_ray] Serve app {cfg.app!r} is up: {len(cfg.devices)} emulated devices in {len(cfg.groups)} "
                f"device-group replica(s), strategy {cfg.strategy}\n"
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


def _ms(x: float) -> float:
    return round(1e3 * float(x), 3)


def versions() -> dict[str, str]:
    import ray
    import torch

    return {"ray": str(ray.__version__), "torch": str(torch.__version__), "python": platform.python_version()}


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
        answered=answered, deadline_met=answered & (ideal - arrival <= deadline + 1e-9),
        fallback=np.array([x["fallback"] for x in res], dtype=bool), responders=mask,
        device_names=cfg.device_names, sample=replay.samples, label=label, prediction=pred,
        correct_top1=answered & (pred == label), correct_topm=answered & (top == label[:, None]).any(axis=1),
        m=cfg.top_m, bytes_down=np.array([x["bytes_down"] for x in res], dtype=np.int64),
        bytes_up=np.array([bytes_up.get(i, 0) for i in range(r)], dtype=np.int64), strategy=cfg.strategy,
        engine="serve")
    timing = pd.DataFrame({"replication": np.full(r, replication, dtype=np.int32), "request_id": np.arange(r),
                           "arrival_s": arrival, "send_lag_s": replay.send_lag_s,
                           "received_s": np.array([x["received_s"] for x in res], dtype=np.float64),
                           "emulated_finish_s": ideal, "finish_s": finish, "overhead_s": finish - ideal})
    last_end = max([ds["last_end"] for snap in replay.final.get("snapshots", []) for ds in snap["devices"].values()]
                   or [0.0])
    t_end = max(float(arrival[-1]) + deadline if r else 0.0, last_end)
    stats, restarts = device_stats(cfg, replay.final.get("snapshots", []), t_end)
    dev = device_frame(
        replication=replication, names=cfg.device_names, groups=[x.group for x in cfg.devices],
        roles=[x.role for x in cfg.devices],
        variants=[cfg.variants[x.slots[0][1]].id if x.slots else None for x in cfg.devices],
        service_ms=[1e3 * x.slots[0][2] if x.slots else float("inf") for x in cfg.devices],
        macs_per_request=[cfg.variants[x.slots[0][1]].macs if x.slots else 0 for x in cfg.devices], stats=stats,
        span_s=t_end)
    extra = {"seed": replay.seed, "wall_s": round(replay.wall_s, 3), "restarts": restarts,
             "group_timeouts": replay.final.get("timeouts", {}), "group_errors": replay.final.get("errors", {}),
             "unresolved_jobs": replay.final.get("unresolved", 0),
             "send_lag_max_ms": _ms(replay.send_lag_s.max()) if r else None}
    return ReplayTables(req, dev, timing, jobs_frame(cfg, replay.final.get("jobs", []), replication), extra)


def jobs_frame(cfg: EmulationConfig, jobs: list[tuple], replication: int) -> pd.DataFrame:
    """Every (request, device) job of the replay as its device group recorded it: the outcome
    (:class:`vip_ray.tables.Outcome`), when the reply reached the master (emulated; inf: never) and
    the variant that ran (-1: none). Jobs of a killed replica are missing."""
    arr = np.array([j[:5] for j in jobs], dtype=np.float64).reshape(-1, 5)
    names = np.array(cfg.device_names, dtype=object)
    return pd.DataFrame({"replication": np.full(len(arr), replication, dtype=np.int32),
                         "request_id": arr[:, 0].astype(np.int64), "device": names[arr[:, 1].astype(np.int64)],
                         "outcome": arr[:, 2].astype(np.int8), "reply_at_s": arr[:, 3],
                         "variant": arr[:, 4].astype(np.int32)}).sort_values(["request_id", "device"],
                                                                             ignore_index=True)


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


def available_time(log: list[tuple[float, bool]], end: float) -> float:
    """Time available within ``[log[0][0], end)`` of a ``(t, available)`` change log."""
    total = 0.0
    for (t, on), nxt in zip(log, [x[0] for x in log[1:]] + [end]):
        if on:
            total += max(0.0, min(nxt, end) - min(t, end))
    return total
