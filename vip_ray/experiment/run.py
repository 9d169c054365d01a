"""``vip-sim run``: one scenario, all its replications, into one run directory (written atomically)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from vip_ray.aggregation import softmax
from vip_ray.experiment.deployment import build_deployment
from vip_ray.experiment.outcome import device_table, request_table
from vip_ray.placement import PlacementError, get_placement
from vip_ray.pool import Pool, pools_root
from vip_ray.scenario import Scenario, ScenarioError, load_scenario
from vip_ray.scenario.load import check_pool, selected_variants
from vip_ray.scenario.schema import CrashAvailability
from vip_ray.sim.engine import run_chunks
from vip_ray.tables import ReplicationStats, requests_arrow, sample_rng, summarize

REQUESTS_FILE, DEVICES_FILE, SUMMARY_FILE, CONFIG_FILE = "requests.parquet", "devices.parquet", "summary.json", "config.yaml"


class RunError(RuntimeError):
    pass


def runs_root() -> Path:
    return Path("results/runs")


def open_pool(scenario: Scenario, log: Callable[[str], None]) -> Pool:
    """The scenario's pool; a missing default pool, or one with ``pool.build`` overrides, is
    trained on first use (and cached in the store)."""
    root, name = scenario.pool.root, scenario.pool.name
    if not (pools_root(root) / name).exists():
        if name == "default" and not scenario.pool.build:
            from vip_ray.pool.default import ensure_default_pool

            return ensure_default_pool(root, log=log)
        if scenario.pool.build:
            from vip_ray.tune.config import compose
            from vip_ray.tune.runner import train_pool

            log(f"[vip_ray] pool {name!r} is not in the store: training it on first use ({' '.join(scenario.pool.build)})")
            overrides = [*scenario.pool.build, f"pool.name={name}", f"pool.root={pools_root(root)}"]
            return Pool.load(train_pool(compose(overrides), log=log))
    return Pool.open(name, root)


def fail_devices(scenario: Scenario, n: int) -> Scenario:
    """Crash ``n`` workers at t=0, the most capable first (the worst case for accuracy)."""
    workers = [i for i, d in enumerate(scenario.devices) if d.role != "master"]
    if not 0 <= n <= len(workers):
        raise ScenarioError(f"failed_devices: {n} is out of range; allowed: 0..{len(workers)} (workers)")
    order = sorted(workers, key=lambda i: -(scenario.devices[i].speed() or 0.0))
    devices = list(scenario.devices)
    for i in order[:n]:
        devices[i] = devices[i].model_copy(update={"availability": CrashAvailability(kind="crash", at_s=0.0)})
    return scenario.model_copy(update={"devices": devices})


def _versions() -> dict[str, str]:
    import platform

    import simpy

    import vip_ray

    return {"python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
            "pyarrow": pa.__version__, "simpy": simpy.__version__, "vip_ray": vip_ray.__version__}


def simulate(scenario: Scenario, pool: Pool, out_dir: Path, *, engine: str, progress=None,
             chunk_requests: int = 200_000) -> dict[str, Any]:
    """Run every replication into ``out_dir`` (requests streamed in chunks); return the summary."""
    probs = bank_probs_for(scenario, pool)
    writer = None
    device_rows, figures = [], []
    meta = {"placement": {}, "events": 0, "engine_wall_s": 0.0}
    try:
        for rep in range(scenario.seeds.replications):
            seed = scenario.seeds.base + rep
            dep = build_deployment(scenario, pool, seed=seed)
            meta["placement"][rep] = {dv: [dep.variants[s.variant].id if np.isfinite(s.service_s) else None, s.start_s]
                                      for dv, slots in zip(dep.device_names, dep.slots) for s in slots[:1]}
            samples = sample_rng(seed)  # which test sample each request carries
            totals = None
            t_start = t_end = 0.0
            stats = ReplicationStats()
            for i, chunk in enumerate(run_chunks(dep.spec, engine, chunk_requests=chunk_requests)):
                rows = request_table(chunk, dep, probs, replication=rep, seed=seed, sample_rng=samples)
                stats.add(rows)
                table = requests_arrow(rows)
                if writer is None:
                    writer = pq.ParquetWriter(out_dir / REQUESTS_FILE, table.schema)
                writer.write_table(table.cast(writer.schema))
                dstats = chunk.device_stats
                totals = {k: np.array(v, copy=True) for k, v in dstats.items()} if totals is None else \
                    {k: totals[k] + dstats[k] for k in totals}
                t_start = chunk.t_start if i == 0 else t_start
                t_end = chunk.t_end
                meta["events"] += chunk.events
                meta["engine_wall_s"] += chunk.wall_s
                if progress:
                    progress(chunk.n_requests)
            chunk.device_stats, chunk.t_start, chunk.t_end = totals, t_start, t_end
            device_rows.append(device_table(chunk, dep, replication=rep))
            figures.append(stats.figures())
    finally:
        if writer is not None:
            writer.close()
    pd.concat(device_rows, ignore_index=True).to_parquet(out_dir / DEVICES_FILE, index=False)
    summary = summarize(figures, scenario.workload.deadline_ms / 1e3)
    summary.update({"scenario": scenario.name, "pool": pool.name, "engine": engine, "strategy": scenario.strategy.name,
                    "placement": meta["placement"], "events": meta["events"],
                    "engine_wall_s": round(meta["engine_wall_s"], 3)})
    return summary


def bank_probs_for(scenario: Scenario, pool: Pool) -> np.ndarray:
    """(V, N, C) probabilities of the scenario's variants on the pool's test split (bank order)."""
    ids = [v.id for v in selected_variants(scenario, pool)]
    return softmax(pool.logits(ids).astype(np.float64), axis=-1)


def expected_requests(scenario: Scenario) -> int | None:
    w = scenario.workload
    n = w.requests
    if w.duration_s and w.rate:
        n = min(n or 10**12, int(w.duration_s * w.rate))
    return n


def run_scenario(path: str | Path, *, overrides: Sequence[str] = (), out: str | Path | None = None,
                 engine: str | None = None, failed_devices: int | None = None, plots: bool = True,
                 log: Callable[[str], None] = print, progress_factory=None, serve_options=None) -> Path:
    """Load, validate and run a scenario; write ``requests.parquet``, ``devices.parquet``,
    ``summary.json``, ``config.yaml`` and plots into a new run directory; return it.

    ``engine``: ``serve`` (live on Ray Serve, options ``serve_options``: a
    :class:`vip_ray.serve.ServeOptions`), ``sim`` (the scenario's ``sim_engine``) or a simulator
    engine name (``fast``, ``reference``); default: the scenario's ``engine``."""
    scenario = load_scenario(path, overrides)
    live = engine == "serve" or (engine is None and scenario.engine == "serve")
    try:  # before any pool is opened or trained
        get_placement(scenario.placement.policy)
    except PlacementError as e:
        raise ScenarioError(f"{path}: placement.policy: {e}") from None
    if failed_devices is not None:
        scenario = fail_devices(scenario, failed_devices)
    engine = "serve" if live else (scenario.sim_engine if engine in (None, "sim") else engine)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out) if out else runs_root() / f"{scenario.name}-{stamp}"
    if out_dir.exists():
        raise RunError(f"{out_dir} already exists; pick another --out (nothing was overwritten)")
    pool = open_pool(scenario, log)
    check_pool(scenario, pool, file=str(path))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    t0 = time.time()
    try:
        total = expected_requests(scenario)
        progress = progress_factory(total * scenario.seeds.replications if total else None) if progress_factory else None
        if live:
            from vip_ray.serve import ServeOptions, run_serve

            serve_options = serve_options or ServeOptions()
            summary = run_serve(scenario, pool, tmp, options=serve_options, progress=progress, log=log)
        else:
            summary = simulate(scenario, pool, tmp, engine=engine, progress=progress)
        summary["wall_s"] = round(time.time() - t0, 3)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        config = {"scenario": scenario.resolved(), "source": str(path), "overrides": list(overrides),
                  "failed_devices": failed_devices, "engine": engine,
                  "seeds": [scenario.seeds.base + r for r in range(scenario.seeds.replications)],
                  "pool": {"name": pool.name, "path": str(pool.path), "fingerprint": pool.manifest.data.get("fingerprint"),
                           "created": pool.manifest.created},
                  "versions": {**_versions(), **(summary["serve"]["versions"] if live else {})}, "argv": sys.argv}
        if live:
            config["serve"] = {**json.loads(json.dumps(dataclasses.asdict(serve_options))), "app": summary["serve"]["app"],
                               "groups": summary["serve"]["groups"]}
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        if plots:
            from vip_ray.experiment.plots import run_plots

            run_plots(tmp)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
