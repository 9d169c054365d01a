"""``vip-sim run``: one scenario, all its replications, into one run directory (written atomically)."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from vip_ray.atomic import atomic_directory
from vip_ray.experiment.strategies import Context, Strategy, get_strategy
from vip_ray.placement import PlacementError, get_placement
from vip_ray.pool import Pool, pools_root
from vip_ray.scenario import Scenario, ScenarioError, load_scenario
from vip_ray.scenario.load import check_pool
from vip_ray.scenario.schema import CrashAvailability
from vip_ray.tables import ReplicationStats, requests_arrow, summarize

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
             chunk_requests: int = 200_000, strategy: Strategy | None = None, file: str = "<scenario>",
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every replication of the scenario's strategy into ``out_dir`` (requests streamed in
    chunks); return the summary."""
    if strategy is None:
        strategy = get_strategy(scenario.strategy.name, file=file).from_scenario(scenario, file)
    ctx = Context(scenario, pool, file=file, log=log)
    strategy.prepare(ctx)
    writer = None
    device_rows, figures = [], []
    meta: dict[str, Any] = {"placement": {}, "events": 0, "engine_wall_s": 0.0}
    try:
        for rep in range(scenario.seeds.replications):
            seed = scenario.seeds.base + rep
            out = strategy.replication(ctx, seed=seed, replication=rep, engine=engine, chunk_requests=chunk_requests)
            stats = ReplicationStats()
            for rows in out:
                stats.add(rows)
                table = requests_arrow(rows)
                if writer is None:
                    writer = pq.ParquetWriter(out_dir / REQUESTS_FILE, table.schema)
                writer.write_table(table.cast(writer.schema))
                if progress:
                    progress(len(rows))
            device_rows.append(out.devices)
            figures.append(stats.figures())
            meta["placement"][rep] = out.meta.get("placement", {})
            meta["events"] += out.meta.get("events", 0)
            meta["engine_wall_s"] += out.meta.get("engine_wall_s", 0.0)
            meta.update({k: v for k, v in out.meta.items() if k not in ("placement", "events", "engine_wall_s")})
    finally:
        if writer is not None:
            writer.close()
    devices = pd.concat(device_rows, ignore_index=True)
    devices.to_parquet(out_dir / DEVICES_FILE, index=False)
    summary = summarize(figures, scenario.workload.deadline_ms / 1e3)
    summary.update({"scenario": scenario.name, "pool": pool.name, "engine": engine, "strategy": scenario.strategy.name,
                    "macs_per_device_max": int(devices.groupby("device")["macs_per_request"].max().max()),
                    **{k: v for k, v in meta.items() if k != "engine_wall_s"},
                    "engine_wall_s": round(meta["engine_wall_s"], 3)})
    return summary


def live_plan(strategy: Strategy, scenario: Scenario, pool: Pool, file: str, log: Callable[[str], None]):
    """What the Serve engine deploys: the strategy's placement plan (after its ``prepare``)."""
    ctx = Context(scenario, pool, file=file, log=log)
    strategy.prepare(ctx)
    return strategy.plan(ctx)


def checked_strategy(scenario: Scenario, file: str, *, live: bool) -> Strategy:
    """The scenario's strategy, its options validated, refused up front (before any pool is opened
    or trained) when the engine cannot run it or the placement policy is unknown."""
    strategy = get_strategy(scenario.strategy.name, file=file).from_scenario(scenario, file)
    if live and "serve" not in strategy.engines:
        from vip_ray.experiment.strategies import STRATEGIES

        allowed = ", ".join(n for n, c in sorted(STRATEGIES.items()) if "serve" in c.engines)
        raise ScenarioError(f"{file}: strategy.name: {scenario.strategy.name!r} runs on the simulator only; "
                            f"strategies the Serve engine runs: {allowed}", file=file)
    try:
        get_placement(scenario.placement.policy)
    except PlacementError as e:
        raise ScenarioError(f"{file}: placement.policy: {e}") from None
    return strategy


def serve_scenario(path: str | Path, *, overrides: Sequence[str] = (), options=None, duration_s: float | None = None,
                   log: Callable[[str], None] = print, on_ready: Callable[[Any], None] | None = None) -> dict:
    """``vip-sim serve``: keep a scenario's emulation up on Ray Serve, answering HTTP
    (``POST /predict``, ``GET /health``), until Ctrl-C or ``duration_s`` seconds; no workload is
    replayed. ``on_ready(emulation)`` is called once it runs. Returns the last health report."""
    from vip_ray.serve import keep_serving

    scenario = load_scenario(path, overrides)
    strategy = checked_strategy(scenario, str(path), live=True)
    pool = open_pool(scenario, log)
    check_pool(scenario, pool, file=str(path))
    return keep_serving(scenario, pool, options=options, plan=live_plan(strategy, scenario, pool, str(path), log),
                        duration_s=duration_s, log=log, on_ready=on_ready)


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
    strategy = checked_strategy(scenario, str(path), live=live)
    if failed_devices is not None:
        scenario = fail_devices(scenario, failed_devices)
    engine = "serve" if live else (scenario.sim_engine if engine in (None, "sim") else engine)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out) if out else runs_root() / f"{scenario.name}-{stamp}"
    if out_dir.exists():
        raise RunError(f"{out_dir} already exists; pick another --out (nothing was overwritten)")
    pool = open_pool(scenario, log)
    check_pool(scenario, pool, file=str(path))
    t0 = time.time()
    with atomic_directory(out_dir) as tmp:  # removed on an error, Ctrl-C or SIGTERM
        total = expected_requests(scenario)
        progress = progress_factory(total * scenario.seeds.replications if total else None) if progress_factory else None
        if live:
            from vip_ray.serve import ServeOptions, run_serve

            serve_options = serve_options or ServeOptions()
            summary = run_serve(scenario, pool, tmp, options=serve_options,
                                plan=live_plan(strategy, scenario, pool, str(path), log), progress=progress, log=log)
        else:
            summary = simulate(scenario, pool, tmp, engine=engine, progress=progress, strategy=strategy,
                               file=str(path), log=log)
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
    return out_dir
