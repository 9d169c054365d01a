"""``vip-sim sweep``: a grid of scenario variations into one tidy table (one row per point × replication)."""
from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from vip_ray.core.cluster import stop
from vip_ray.experiment.run import (
    SUMMARY_FILE,
    RunError,
    checked_strategy,
    engine_name,
    fail_devices,
    refuse_up_front,
)
from vip_ray.experiment.study import (
    StudyOptions,
    StudyPoint,
    check_folders,
    file_sha256,
    open_pools,
    plan_cluster,
    run_study,
    study_folder,
)
from vip_ray.scenario import ScenarioError, load_scenario
from vip_ray.scenario.load import check_pool

SPECIAL_KEYS = {"failed_devices"}  # not scenario keys: applied to the loaded scenario


def parse_int_range(text: str, what: str, example: str = "0..4") -> list[int]:
    """``A..B`` (both ends included, A <= B) or ``N,M,...`` as a list of integers; a ScenarioError
    naming ``what`` (the flag or key) otherwise — an empty range would run nothing without a word."""
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split(".."))
            values = list(range(lo, hi + 1))
        else:
            values = [int(x) for x in text.split(",")]
    except ValueError:
        raise ScenarioError(f"{what}: {text!r} is not a range like {example} or a list like 0,2,4") from None
    if not values:
        raise ScenarioError(f"{what}: {text!r} is an empty range (A..B counts up from A to B); "
                            f"did you mean {hi}..{lo}?")
    return values


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values:
            raise ScenarioError(f"--grid {item!r}: expected key=v1,v2,... (e.g. workload.deadline_ms=20,50,100 "
                                f"or failed_devices=0..4)")
        if key in grid:
            raise ScenarioError(f"--grid {item!r}: {key} is already a grid axis; give all its values in one --grid")
        if key in SPECIAL_KEYS:
            grid[key] = parse_int_range(values, f"--grid {key}")
        elif ".." in values and "," not in values:
            grid[key] = parse_int_range(values, f"--grid {key}", example="1..3")
        else:
            grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def study_points(path: str | Path, points: Sequence[dict[str, Any]], overrides: Sequence[str],
                 engine: str | None) -> list[StudyPoint]:
    """Every point's scenario loaded and checked (strategy, failed-device count), so a bad value
    is refused before the first point runs (or a pool is trained)."""
    out = []
    for i, point in enumerate(points):
        sets = [f"{k}={v}" for k, v in point.items() if k not in SPECIAL_KEYS]
        where = ", ".join(f"{k}={v}" for k, v in point.items())
        try:
            scenario = load_scenario(path, [*overrides, *sets])
            name = engine_name(scenario, engine)
            strategy = checked_strategy(scenario, str(path), name)
            failed = point.get("failed_devices")
            if failed is not None:
                scenario = fail_devices(scenario, failed)
            refuse_up_front(strategy, scenario, str(path))
        except ScenarioError as e:
            raise ScenarioError(f"{e} (--grid point {where})", file=e.file, problems=e.problems) from None
        out.append(StudyPoint(folder=f"points/{i:03d}", label=where, scenario=scenario, strategy=strategy, engine=name,
                              file=str(path), overrides=[*overrides, *sets], config={"failed_devices": failed}))
    return out


def run_sweep(path: str | Path, grid_items: Sequence[str], *, overrides: Sequence[str] = (),
              out: str | Path | None = None, engine: str | None = None,
              log: Callable[[str], None] = print, progress_factory=None, serve_options=None,
              study: StudyOptions | None = None) -> Path:
    """Every grid point × replication into ``sweep.parquet`` (one row each, point then
    replication order) and ``points/<NNN>/``. ``study``: in this process (default) or on Ray, and
    ``--resume`` (:mod:`vip_ray.experiment.study`)."""
    opts = study or StudyOptions()
    grid = parse_grid(grid_items)
    points = grid_points(grid)
    planned = study_points(path, points, overrides, engine)
    if opts.resume and not out:
        raise RunError("--resume needs --out DIR: the folder of the study to continue")
    out_dir = Path(out) if out else Path("results/sweeps") / f"{Path(path).stem}-{uuid.uuid4().hex[:6]}"
    identity = {"kind": "sweep", "source": str(Path(path).resolve()), "source_sha256": file_sha256(path),
                "overrides": list(overrides), "grid": grid, "engine": engine}
    if check_folders(out_dir, identity, opts.resume, log):
        return out_dir
    plan = plan_cluster(opts, sorted({p.engine for p in planned}), log)
    try:
        pools, extra = open_pools(planned, log, probe=plan is not None)
        for p in planned:
            check_pool(p.scenario, pools[p.pool_key], file=p.file, uses_variants=p.strategy.uses_variants)
        identity["pools"] = {p.name: p.bank_sha256 for p in pools.values()}
        if opts.resume:
            check_folders(out_dir, identity, True, log)  # the pools too: a retrained one is another study
    except BaseException:
        if plan is not None and plan.started:
            stop()
        raise
    keys = list(grid)
    with study_folder(out_dir, identity, planned, log=log) as tmp:  # kept on a failure once it holds finished points
        run_study(planned, tmp, pools, extra, plan, opts, kind="sweep", log=log, progress_factory=progress_factory,
                  engine_options=serve_options)
        rows = []
        deadline_ms: set[float] = set()
        for i, (point, planned_point) in enumerate(zip(points, planned)):
            summary = json.loads((tmp / planned_point.folder / SUMMARY_FILE).read_text())
            deadline_ms.add(1e3 * summary["deadline_s"])
            for rep in range(summary["replications"]):
                row = {"point": i, **point, "replication": rep}
                row.update({m: v["per_replication"][rep] for m, v in summary["metrics"].items()})
                rows.append(row)
        table = pd.DataFrame(rows)
        for key in keys:  # a column mixing types (k=1,2,all) is stored as text
            if table[key].map(type).nunique() > 1:
                table[key] = table[key].astype(str)
        table.to_parquet(tmp / "sweep.parquet", index=False)
        (tmp / "grid.json").write_text(json.dumps({"grid": grid, "overrides": list(overrides), "source": str(path)},
                                                  indent=2, default=str))
        plot_sweep(table, keys, tmp / f"sweep_{keys[0].replace('.', '_')}.png",
                   deadline_ms=deadline_ms.pop() if len(deadline_ms) == 1 else None)
    return out_dir


#: Axis labels of grid keys whose unit is not in their name.
AXIS_LABELS = {"failed_devices": "failed devices (the most capable crash at t = 0)",
               "strategy.k": "top-k of each reply (VP §III-C)", "seeds.replications": "replications"}
_UNITS = {"_ms": "ms", "_s": "s", "_mbps": "Mbps", "_hz": "Hz", "_bytes": "B"}


def axis_label(key: str) -> str:
    """``workload.deadline_ms`` -> ``workload.deadline (ms)``; known keys get their own words."""
    if key in AXIS_LABELS:
        return AXIS_LABELS[key]
    for suffix, unit in _UNITS.items():
        if key.endswith(suffix):
            return f"{key[: -len(suffix)]} ({unit})"
    return key


def plot_sweep(table: pd.DataFrame, keys: list[str], path: Path, *, deadline_ms: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = sweep_figure(table, keys, deadline_ms=deadline_ms)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sweep_figure(table: pd.DataFrame, keys: list[str], *, deadline_ms: float | None = None):
    """Three panels against the first grid key, mean ± 95 % CI over replications (and over the
    other grid keys, which the title names): the share of requests answered and answered by the
    deadline; top-1 accuracy on an axis fitted to its range; p50 and p99 latency with the
    deadline."""
    import matplotlib.pyplot as plt
    import numpy as np

    key = keys[0]
    g = table.groupby(key, sort=False)
    xs = np.arange(g.ngroups)
    labels = [str(x) for x in g[key].first()]

    def band(metric, scale=1.0):
        mean = g[metric].mean() * scale
        ci = 1.96 * g[metric].std(ddof=1).fillna(0) / np.sqrt(g[metric].count()) * scale
        return mean.to_numpy(), ci.to_numpy()

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    m, ci = band("answered", 100)
    ax.errorbar(xs, m, yerr=ci, marker="o", ms=9, mfc="none", mew=1.5, lw=2.5, alpha=0.6, capsize=3,
                label="answered (in time or late)", zorder=2)
    m, ci = band("deadline_met", 100)
    ax.errorbar(xs, m, yerr=ci, marker="x", ms=6, ls="--", lw=1.2, capsize=3, label="answered by the deadline",
                zorder=3)
    ax.set_ylabel("% of all requests")
    ax.set_ylim(-3, 103)
    ax.set_title("requests answered", fontsize=10)
    ax.legend(fontsize=7, loc="best")

    ax = axes[1]
    m, ci = band("accuracy_top1", 100)
    ax.errorbar(xs, m, yerr=ci, marker="o", capsize=3, color="tab:green")
    for x, v in zip(xs, m):
        ax.annotate(f"{v:.1f}", (x, v), textcoords="offset points", xytext=(6, 4), ha="left", fontsize=7)
    lo, hi = np.nanmin(m - ci), np.nanmax(m + ci)
    pad = max(1.0, 0.15 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad) + 2)  # fitted, so a change of a few points shows
    ax.set_ylabel("top-1 accuracy (% of all requests)")
    ax.set_title("accuracy (axis fitted to the data)", fontsize=10)

    ax = axes[2]
    m, ci = band("latency_p50_s", 1e3)
    ax.errorbar(xs, m, yerr=ci, marker="o", capsize=3, color="tab:purple", label="p50")
    m99, _ = band("latency_p99_s", 1e3)
    ax.plot(xs, m99, marker="^", ls=":", color="tab:purple", alpha=0.7, label="p99")
    if deadline_ms is not None:
        ax.axhline(deadline_ms, color="k", ls="--", lw=0.8, label=f"deadline {deadline_ms:g} ms")
    ax.set_ylabel("latency of answered requests (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("latency", fontsize=10)
    ax.legend(fontsize=7, loc="best")

    for ax in axes:
        ax.set_xticks(xs, labels)
        ax.set_xlabel(axis_label(key))
        ax.grid(alpha=0.3)
    reps = int(table["replication"].nunique()) if "replication" in table else 1
    others = f"; mean over {', '.join(keys[1:])}" if len(keys) > 1 else ""
    fig.suptitle(f"sweep over {key}: mean ± 95 % CI of {reps} replication(s){others}", fontsize=10)
    fig.tight_layout()
    return fig
