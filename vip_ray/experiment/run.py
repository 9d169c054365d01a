"""``vip-sim run``: one scenario, all its replications, on one engine, into one run directory
(written atomically).

One path for every engine: the strategy deploys each seed (:meth:`Strategy.deploy`), the engine
(:data:`vip_ray.core.engine.ENGINES`: the simulator's kernels or the live Ray Serve emulation)
replicates it, :func:`replicate` streams the tables to disk.
"""
from __future__ import annotations

from vip_ray.errors import UserError

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from vip_ray.core.engine import FAMILIES, Engine, engine_family, make_engine
from vip_ray.core.registry import UnknownName
from vip_ray.core.results import atomic_directory, provenance
from vip_ray.core.tables import ReplicationStats, requests_arrow, summarize
from vip_ray.pool import Pool
from vip_ray.scenario import Scenario, ScenarioError, load_scenario
from vip_ray.scenario.load import check_pool
from vip_ray.scenario.schema import CrashAvailability
from vip_ray.strategies import Context, Strategy, get_strategy, runs_on

REQUESTS_FILE, DEVICES_FILE, SUMMARY_FILE, CONFIG_FILE = "requests.parquet", "devices.parquet", "summary.json", "config.yaml"


class RunError(UserError, RuntimeError):
    pass


def runs_root() -> Path:
    return Path("results/runs")


def open_pool(scenario: Scenario, log: Callable[[str], None], name: str | None = None) -> Pool:
    """The scenario's pool, or pool ``name`` beside it (the default pools ship with vip_ray or are
    trained on first use; one with ``pool.build`` overrides is trained on first use): see
    :mod:`vip_ray.experiment.pools`."""
    from vip_ray.experiment import pools

    if name is None or name == scenario.pool.name:
        return pools.open_scenario_pool(scenario, log)
    if name == pools.DEFAULT_CP_POOL:
        return pools.ensure_default_cp_pool(scenario.pool.root, log=log)
    return pools.open_pool_by_name(name, scenario.pool.root, log)


def context(scenario: Scenario, pool: Pool, *, file: str, log: Callable[[str], None]) -> Context:
    return Context(scenario, pool, file=file, log=log, open_pool=lambda name: open_pool(scenario, log, name))


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


def engine_name(scenario: Scenario, engine: str | None) -> str:
    """``engine`` resolved: ``None`` → the scenario's ``engine``; ``sim`` → its ``sim_engine``."""
    engine = engine or scenario.engine
    return scenario.sim_engine if engine == "sim" else engine


def checked_strategy(scenario: Scenario, file: str, engine: str) -> Strategy:
    """The scenario's strategy, its options validated, refused up front (before any pool is
    opened or trained) when it does not run on ``engine``'s family or the placement is unknown."""
    from vip_ray.placement import PlacementError, get_placement

    strategy = get_strategy(scenario.strategy.name, file=file).from_scenario(scenario, file)
    try:
        family = engine_family(engine)
    except KeyError:
        allowed = ", ".join(["sim", *sorted(n for names in FAMILIES.values() for n in names)])
        raise ScenarioError(f"{file}: engine: unknown engine {engine!r}; allowed: {allowed}", file=file) from None
    if family not in strategy.engines:
        raise ScenarioError(f"{file}: strategy.name: {strategy.name!r} runs on the {' and '.join(strategy.engines)} "
                            f"engine only; strategies the {family} engine runs: {', '.join(runs_on(family))}",
                            file=file)
    try:
        get_placement(scenario.placement.policy)
    except PlacementError as e:
        raise ScenarioError(f"{file}: placement.policy: {e}") from None
    return strategy


def expected_requests(scenario: Scenario) -> int | None:
    w = scenario.workload
    n = w.requests
    if w.duration_s and w.rate:
        n = min(n or 10**12, int(w.duration_s * w.rate))
    return n


def replicate(engine: Engine, strategy: Strategy, ctx: Context, out_dir: Path, *, progress=None,
              chunk_requests: int = 200_000) -> dict[str, Any]:
    """Every replication of ``ctx.scenario`` on ``engine`` into ``out_dir`` (requests streamed in
    chunks; the engine's extra tables beside them); return the summary."""
    import pandas as pd
    import pyarrow.parquet as pq

    scenario = ctx.scenario
    strategy.prepare(ctx)
    writer = None
    device_rows, figures, extra = [], [], {}
    meta: dict[str, Any] = {"placement": {}, "events": 0, "engine_wall_s": 0.0}
    try:
        for rep in range(scenario.seeds.replications):
            seed = scenario.seeds.base + rep
            out = engine.replicate(strategy.deploy(ctx, seed), replication=rep, chunk_requests=chunk_requests)
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
            for name, frame in out.tables.items():
                extra.setdefault(name, []).append(frame)
            meta["placement"][rep] = out.meta.get("placement", {})
            meta["events"] += out.meta.get("events", 0)
            meta["engine_wall_s"] += out.meta.get("engine_wall_s", 0.0)
            meta.update({k: v for k, v in out.meta.items() if k not in ("placement", "events", "engine_wall_s")})
    finally:
        if writer is not None:
            writer.close()
    devices = pd.concat(device_rows, ignore_index=True)
    devices.to_parquet(out_dir / DEVICES_FILE, index=False)
    for name, frames in extra.items():
        pd.concat(frames, ignore_index=True).to_parquet(out_dir / f"{name}.parquet", index=False)
    summary = summarize(figures, scenario.workload.deadline_ms / 1e3)
    summary.update({"scenario": scenario.name, "pool": ctx.pool.name, "engine": engine.name,
                    "strategy": scenario.strategy.name,
                    "macs_per_device_max": int(devices.groupby("device")["macs_per_request"].max().max()),
                    **{k: v for k, v in meta.items() if k != "engine_wall_s"},
                    "engine_wall_s": round(meta["engine_wall_s"], 3), **engine.run_summary()})
    return summary


def run_config(scenario: Scenario, pool: Pool, engine: Engine, *, source: str, overrides: Sequence[str],
               **more: Any) -> dict[str, Any]:
    """``config.yaml``: the resolved scenario, seeds, pool fingerprint, engine, provenance."""
    return provenance(scenario=scenario.resolved(), source=source, overrides=list(overrides), **more,
                      engine=engine.describe(),
                      seeds=[scenario.seeds.base + r for r in range(scenario.seeds.replications)],
                      pool={"name": pool.name, "path": str(pool.path),
                            "fingerprint": pool.manifest.data.get("fingerprint"), "created": pool.manifest.created,
                            "bank_sha256": pool.bank_sha256})


def json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_scenario(path: str | Path, *, overrides: Sequence[str] = (), out: str | Path | None = None,
                 engine: str | None = None, failed_devices: int | None = None, plots: bool = True,
                 log: Callable[[str], None] = print, progress_factory=None, engine_options=None,
                 serve_options=None) -> Path:
    """Load, validate and run a scenario; write ``requests.parquet``, ``devices.parquet``,
    ``summary.json``, ``config.yaml`` (and the engine's own tables, and plots) into a new run
    directory; return it.

    ``engine``: an engine name (``fast``, ``loop``, ``numpy``, ``reference``, ``serve``), ``sim``
    (the scenario's ``sim_engine``), or ``None`` (the scenario's ``engine``); ``engine_options``
    go to the engine (for ``serve``: a :class:`vip_ray.serve.ServeOptions`)."""
    scenario = load_scenario(path, overrides)
    file = str(path)
    name = engine_name(scenario, engine)
    strategy = checked_strategy(scenario, file, name)
    if failed_devices is not None:
        scenario = fail_devices(scenario, failed_devices)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out) if out else runs_root() / f"{scenario.name}-{stamp}"
    if out_dir.exists():
        raise RunError(f"{out_dir} already exists; pick another --out (nothing was overwritten)")
    pool = open_pool(scenario, log)
    check_pool(scenario, pool, file=file, uses_variants=strategy.uses_variants)
    import time

    t0 = time.time()
    with atomic_directory(out_dir) as tmp, make_engine(name, engine_options or serve_options) as eng:
        total = expected_requests(scenario)
        progress = progress_factory(total * scenario.seeds.replications if total else None) if progress_factory else None
        summary = replicate(eng, strategy, context(scenario, pool, file=file, log=log), tmp, progress=progress)
        summary["wall_s"] = round(time.time() - t0, 3)
        (tmp / SUMMARY_FILE).write_text(json.dumps(json_safe(summary), indent=2))
        import yaml

        config = run_config(scenario, pool, eng, source=file, overrides=overrides, failed_devices=failed_devices)
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(json_safe(config), sort_keys=False))
        if plots:
            from vip_ray.experiment.plots import run_plots

            run_plots(tmp)
    return out_dir


def serve_scenario(path: str | Path, *, overrides: Sequence[str] = (), options=None, duration_s: float | None = None,
                   log: Callable[[str], None] = print, on_ready: Callable[[Any], None] | None = None) -> dict:
    """``vip-sim serve``: keep a scenario's emulation up on Ray Serve, answering HTTP
    (``POST /predict``, ``GET /health``), until Ctrl-C or ``duration_s`` seconds; no workload is
    replayed. ``on_ready(emulation)`` is called once it runs. Returns the last health report."""
    scenario = load_scenario(path, overrides)
    file = str(path)
    strategy = checked_strategy(scenario, file, "serve")
    pool = open_pool(scenario, log)
    check_pool(scenario, pool, file=file, uses_variants=strategy.uses_variants)
    ctx = context(scenario, pool, file=file, log=log)
    strategy.prepare(ctx)
    with make_engine("serve", options) as eng:
        return eng.keep_serving(strategy.deploy(ctx, scenario.seeds.base), duration_s=duration_s, on_ready=on_ready)


__all__ = ["RunError", "UnknownName", "checked_strategy", "context", "engine_name", "fail_devices", "open_pool",
           "replicate", "run_config", "run_scenario", "serve_scenario"]
