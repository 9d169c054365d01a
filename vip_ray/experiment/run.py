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

import numpy as np

from vip_ray.core.engine import FAMILIES, Engine, engine_family, make_engine
from vip_ray.core.registry import UnknownName
from vip_ray.core.results import atomic_directory, check_new_folder, provenance
from vip_ray.core.breakdown import BreakdownStats, ensure_breakdown
from vip_ray.core.energy import meter_for
from vip_ray.core.tables import ReplicationStats, requests_arrow, summarize
from vip_ray.pool import Pool
from vip_ray.scenario import Scenario, ScenarioError, load_scenario
from vip_ray.scenario.load import check_pool
from vip_ray.scenario.schema import CrashAvailability
from vip_ray.strategies import Context, Strategy, get_strategy, runs_on

#: scenarios with more devices than this get config.yaml in YAML's flow (JSON) form
BLOCK_YAML_DEVICES = 500
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


def refuse_up_front(strategy: Strategy, scenario: Scenario, file: str) -> None:
    """A strategy that cannot run ``scenario`` at all (:meth:`Strategy.refuses`) is refused before
    a pool is opened or trained (``vip-sim compare`` skips such a condition instead, with a note)."""
    why = strategy.refuses(scenario)
    if why:
        raise ScenarioError(f"{file}: {why}", file=file)


def checked_strategy(scenario: Scenario, file: str, engine: str) -> Strategy:
    """The scenario's strategy, its options validated, refused up front (before any pool is
    opened or trained) when it does not run on ``engine``'s family or the placement is unknown."""
    from vip_ray.placement import PlacementError, get_placement

    strategy = get_strategy(scenario.strategy.name, file=file).from_scenario(scenario, file)
    try:
        family = "sim" if engine == "sim" else engine_family(engine)   # "sim": the family, any kernel
    except KeyError:
        allowed = ", ".join(["sim", *sorted(n for names in FAMILIES.values() for n in names)])
        raise ScenarioError(f"{file}: engine: unknown engine {engine!r}; allowed: {allowed}", file=file) from None
    if family not in strategy.engines:
        raise ScenarioError(f"{file}: strategy.name: {strategy.name!r} runs on the {' and '.join(strategy.engines)} "
                            f"engine only; strategies the {family} engine runs: {', '.join(runs_on(family))}",
                            file=file)
    if scenario.masters is not None:
        if family not in strategy.multi_master:
            where = f"the {' and '.join(strategy.multi_master)} engine only" if strategy.multi_master else "no engine"
            raise ScenarioError(f"{file}: masters: strategy {strategy.name!r} on the {family} engine runs one master; "
                                f"with several masters it runs on {where}", file=file)
        from vip_ray.sim.engine import MULTI_MASTER_ENGINES

        if family == "sim" and engine not in MULTI_MASTER_ENGINES:
            raise ScenarioError(f"{file}: sim_engine: {engine!r} runs one master; scenarios with masters: run on "
                                f"{', '.join(MULTI_MASTER_ENGINES)}", file=file)
    from vip_ray.control import check_control
    from vip_ray.strategies.fanout import FanOutStrategy

    refused = check_control(scenario.control, file=file, family=family, fanout=isinstance(strategy, FanOutStrategy),
                            aggregator=scenario.strategy.aggregator, multi_master=scenario.masters is not None)
    if refused:
        raise ScenarioError(refused, file=file)
    try:
        get_placement(scenario.placement.policy)
    except PlacementError as e:
        raise ScenarioError(f"{file}: placement.policy: {e}") from None
    return strategy


def expected_requests(scenario: Scenario) -> int | None:
    w = scenario.workload
    if scenario.masters is not None:   # every user's requests (its own rate, else the workload's)
        total = 0
        for u in scenario.masters.users:
            rate = u.rate_hz or w.rate
            n = w.requests
            if w.duration_s and rate:
                n = min(n or 10**12, int(w.duration_s * rate))
            if n is None:
                return None
            total += n
        return total
    n = w.requests
    if w.duration_s and w.rate:
        n = min(n or 10**12, int(w.duration_s * w.rate))
    return n


class PointTables:
    """The files of one point (a scenario, all its replications) written as its replications
    arrive, in replication order: ``requests.parquet`` streamed chunk by chunk, then
    ``devices.parquet``, the engine's extra tables and the summary. The in-process path feeds it
    from the engine directly, a distributed study from its tasks' results: same code, same bytes."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.writer = None
        self.device_rows: list[Any] = []
        self.figures: list[dict[str, float]] = []
        self.extra: dict[str, list[Any]] = {}
        self.meta: dict[str, Any] = {"placement": {}, "events": 0, "engine_wall_s": 0.0}
        self.per_master: list[dict[str, dict[str, float]]] = []

    def write_chunk(self, table) -> None:
        """One chunk of the request table, as Arrow (:func:`requests_arrow`)."""
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.out_dir / REQUESTS_FILE, table.schema)
        self.writer.write_table(table.cast(self.writer.schema))

    def end_replication(self, rep: int, figures: dict[str, float], devices, tables: dict[str, Any],
                        meta: dict[str, Any]) -> None:
        self.device_rows.append(devices)
        self.figures.append(figures)
        for name, frame in tables.items():
            self.extra.setdefault(name, []).append(frame)
        self.meta["placement"][rep] = meta.get("placement", {})
        self.meta["events"] += meta.get("events", 0)
        self.meta["engine_wall_s"] += meta.get("engine_wall_s", 0.0)
        if "masters" in meta:   # a multi-master run: each master's figures, per replication
            self.per_master.append(meta["masters"])
        if "redeployments" in meta:   # a controller's re-deployments: each replication its own
            self.meta.setdefault("redeployments_per_replication", []).append(int(meta["redeployments"]))
        self.meta.update({k: v for k, v in meta.items()
                          if k not in ("placement", "events", "engine_wall_s", "masters", "redeployments")})
        if "redeployments_per_replication" in self.meta:
            self.meta["redeployments"] = sum(self.meta["redeployments_per_replication"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def finish(self, scenario: Scenario, pool_name: str, engine_name: str,
               run_summary: dict[str, Any]) -> dict[str, Any]:
        """Write the device and extra tables; return the point's summary."""
        import pandas as pd

        self.close()
        meta = self.meta
        devices = pd.concat(self.device_rows, ignore_index=True)
        devices.to_parquet(self.out_dir / DEVICES_FILE, index=False)
        for name, frames in self.extra.items():
            pd.concat(frames, ignore_index=True).to_parquet(self.out_dir / f"{name}.parquet", index=False)
        summary = summarize(self.figures, scenario.workload.deadline_ms / 1e3)
        summary.update({"scenario": scenario.name, "pool": pool_name, "engine": engine_name,
                        "strategy": scenario.strategy.name,
                        "macs_per_device_max": int(devices.groupby("device")["macs_per_request"].max().max()),
                        **{k: v for k, v in meta.items() if k != "engine_wall_s"},
                        "engine_wall_s": round(meta["engine_wall_s"], 3), **run_summary})
        if self.per_master:  # each master's figures, mean over the replications
            summary["masters"] = {
                name: {k: float(np.nanmean([rep[name][k] for rep in self.per_master])) if any(
                    not np.isnan(rep[name][k]) for rep in self.per_master) else float("nan") for k in figs}
                for name, figs in self.per_master[0].items()}
        return summary


def replicate(engine: Engine, strategy: Strategy, ctx: Context, out_dir: Path, *, progress=None,
              chunk_requests: int = 200_000) -> dict[str, Any]:
    """Every replication of ``ctx.scenario`` on ``engine`` into ``out_dir`` (requests streamed in
    chunks; the engine's extra tables beside them); return the summary."""
    scenario = ctx.scenario
    strategy.prepare(ctx)
    tables = PointTables(out_dir)
    try:
        for rep in range(scenario.seeds.replications):
            seed = scenario.seeds.base + rep
            dep = strategy.deploy(ctx, seed)
            energy = meter_for(dep)
            out = engine.replicate(dep, replication=rep, chunk_requests=chunk_requests)
            stats, stages = ReplicationStats(), BreakdownStats()
            for rows in out:
                rows = energy.annotate(ensure_breakdown(rows))
                stats.add(rows)
                stages.add(rows)
                tables.write_chunk(requests_arrow(rows))
                if progress:
                    progress(len(rows))
            devices = energy.devices(out.devices)
            figures = {**stats.figures(), **energy.figures(), **stages.figures()}
            tables.end_replication(rep, figures, devices, out.tables, out.meta)
    finally:
        tables.close()
    return tables.finish(scenario, ctx.pool.name, engine.name, engine.run_summary())


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
    refuse_up_front(strategy, scenario, file)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out) if out else runs_root() / f"{scenario.name}-{stamp}"
    check_new_folder(out_dir)
    pool = open_pool(scenario, log)
    check_pool(scenario, pool, file=file, uses_variants=strategy.uses_variants)
    import time

    t0 = time.time()  # the run's wall time includes the engine's start-up (Serve's)
    with make_engine(name, engine_options or serve_options, log=log) as eng:
        run_point(eng, strategy, scenario, pool, out_dir, file=file, overrides=overrides, log=log, plots=plots,
                  progress=_requests_progress(progress_factory, [scenario]), started=t0,
                  failed_devices=failed_devices)
    return out_dir


def _requests_progress(progress_factory, scenarios: Sequence[Scenario]):
    """One progress callback over the requests of all ``scenarios``' replications (or None)."""
    if not progress_factory:
        return None
    totals = [expected_requests(s) for s in scenarios]
    total = None if None in totals else sum(t * s.seeds.replications for t, s in zip(totals, scenarios))
    return progress_factory(total or None)


def run_point(eng: Engine, strategy: Strategy, scenario: Scenario, pool: Pool, out_dir: Path, *, file: str,
              overrides: Sequence[str], log: Callable[[str], None], progress=None, plots: bool = False,
              started: float | None = None, **config: Any) -> dict[str, Any]:
    """All replications of one (resolved) scenario on an open engine into the new folder
    ``out_dir`` (renamed into place whole): the tables, ``summary.json``, ``config.yaml`` (with
    ``config``'s extra fields) and, if ``plots``, the run's plots. Returns the summary (its
    ``wall_s`` counted from ``started``, default now)."""
    import time

    t0, c0 = time.time() if started is None else started, time.process_time()
    with atomic_directory(out_dir) as tmp:
        summary = replicate(eng, strategy, context(scenario, pool, file=file, log=log), tmp, progress=progress)
        summary["wall_s"] = round(time.time() - t0, 3)
        summary["cpu_s"] = round(time.process_time() - c0, 3)  # this process's CPU seconds (not Serve's actors)
        write_point_records(tmp, summary, scenario, pool, eng, source=file, overrides=overrides, **config)
        if plots:
            from vip_ray.experiment.plots import run_plots

            run_plots(tmp)
    return summary


def write_point_records(folder: Path, summary: dict[str, Any], scenario: Scenario, pool: Pool, eng: Engine, *,
                        source: str, overrides: Sequence[str], **config: Any) -> None:
    """``summary.json`` and ``config.yaml`` of a point."""
    import yaml

    (folder / SUMMARY_FILE).write_text(json.dumps(json_safe(summary), indent=2))
    record = run_config(scenario, pool, eng, source=source, overrides=overrides, **config)
    record = json_safe(record)
    if len(scenario.devices) > BLOCK_YAML_DEVICES:
        # a city: YAML's flow (JSON) form; PyYAML's representer takes seconds per 10,000 devices
        text = json.dumps(record, indent=1) + "\n"
    else:
        text = yaml.dump(record, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)
    (folder / CONFIG_FILE).write_text(text)


def serve_scenario(path: str | Path, *, overrides: Sequence[str] = (), options=None, duration_s: float | None = None,
                   log: Callable[[str], None] = print, on_ready: Callable[[Any], None] | None = None) -> dict:
    """``vip-sim serve``: keep a scenario's emulation up on Ray Serve, answering HTTP
    (``POST /predict``, ``GET /health``), until Ctrl-C or ``duration_s`` seconds; no workload is
    replayed. ``on_ready(emulation)`` is called once it runs. Returns the last health report."""
    scenario = load_scenario(path, overrides)
    file = str(path)
    strategy = checked_strategy(scenario, file, "serve")
    refuse_up_front(strategy, scenario, file)
    pool = open_pool(scenario, log)
    check_pool(scenario, pool, file=file, uses_variants=strategy.uses_variants)
    ctx = context(scenario, pool, file=file, log=log)
    strategy.prepare(ctx)
    with make_engine("serve", options, log=log) as eng:
        return eng.keep_serving(strategy.deploy(ctx, scenario.seeds.base), duration_s=duration_s, on_ready=on_ready)


__all__ = ["PointTables", "RunError", "UnknownName", "checked_strategy", "context", "engine_name", "fail_devices", "open_pool",
           "replicate", "run_config", "run_point", "run_scenario", "serve_scenario", "write_point_records"]
