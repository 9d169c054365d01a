"""``vip-sim compare``: several strategies on the same devices, network, workload and seeds.

Conditions: ``failed=0..F`` (the F most capable workers crash at t = 0, as ``--failed-devices``)
and ``stealing`` (every worker lends only idle cycles: on/off availability, preempt-resume).

Output directory::

    compare.parquet      one row per strategy × condition × replication (columns: COMPARE_COLUMNS)
    points/<strategy>/<condition>/   requests.parquet, devices.parquet, summary.json, config.yaml of each point
    study.json           what the study is (``--resume`` continues only the same study)
    compare.png          accuracy, answered, latency vs failed devices; bytes and MACs per strategy;
                         energy per correct answer vs accuracy (Pareto front), energy per request by part
    latency_breakdown.png  per strategy: where the answered requests' latency went
    end_cloud.csv, end_cloud_phases.csv, end_cloud.png   with coach/neurosurgeon/dads/spinn/jps: latency,
                         throughput, exit ratio, KB, bits, stage bubbles; throughput per bandwidth step
    summary.json, config.yaml
"""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import yaml

from vip_ray.core.engine import make_engine
from vip_ray.core.results import check_new_folder
from vip_ray.core.cluster import stop
from vip_ray.experiment.run import RunError, checked_strategy, engine_name, fail_devices, json_safe, open_pool, run_config
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
from vip_ray.strategies import get_strategy, with_strategy
from vip_ray.scenario import Scenario, ScenarioError, load_scenario
from vip_ray.scenario.load import check_pool
from vip_ray.scenario.schema import OnOffAvailability

#: The comparison table: column -> unit and meaning (asserted by the tests; documented in README).
COMPARE_COLUMNS: dict[str, str] = {
    "strategy": "strategy name",
    "condition": "'failed=N' (N most capable workers crashed at t=0) or 'stealing' (workers lend idle cycles)",
    "failed_devices": "number of crashed workers (NaN for stealing)",
    "replication": "replication index (seed = seeds.base + replication)",
    "requests": "requests simulated",
    "answered": "fraction of requests answered (in time, or late by the scenario's fallback)",
    "deadline_met": "fraction answered within the deadline",
    "accuracy_top1": "fraction of all requests answered with the right class",
    "accuracy_topM": "the same for the top-M classes (M from the pool's class count; column named accuracy_topM)",
    "latency_p50_ms": "median latency of answered requests, ms",
    "latency_p99_ms": "99th-percentile latency of answered requests, ms",
    "bytes_per_request": "bytes on the wire per request (down + up, every hop), B",
    "macs_per_device": "MACs per request of the busiest device's model or slice",
    "macs_total": "MACs per request summed over the devices that compute",
    "devices_used": "devices that compute something",
    "energy_per_request_j": "energy of all devices (compute + radio + idle) per request, J (NaN: no power model; "
                            "a device without a power block, e.g. the catalog's cloud GPU, counts no compute or idle)",
    "energy_per_correct_j": "the same per correct (top-1) answer, J",
    "energy_compute_per_request_j": "compute part of energy_per_request_j, J",
    "energy_radio_per_request_j": "radio part of energy_per_request_j, J",
    "energy_idle_per_request_j": "idle part of energy_per_request_j, J",
    **{f"{c}_mean_ms": f"mean {c} of answered requests (the latency breakdown), ms"
       for c in ("t_down", "t_queue", "t_compute", "t_paused", "t_up", "t_wait", "t_aggregate")},
}


def stealing(scenario: Scenario, busy_s: float, free_s: float) -> Scenario:
    """Every worker lends only its idle cycles: on/off with the given mean busy / free periods."""
    devices = [d if d.role == "master" else d.model_copy(update={"availability": OnOffAvailability(
        kind="onoff", busy_mean_s=busy_s, free_mean_s=free_s, mode="resume")}) for d in scenario.devices]
    return scenario.model_copy(update={"devices": devices})


def _conditions(scenario: Scenario, failed: Sequence[int] | None, steal: tuple[float, float] | None):
    workers = sum(d.role != "master" for d in scenario.devices)
    failed = list(range(workers + 1)) if failed is None else list(failed)
    bad = [f for f in failed if not 0 <= f <= workers]
    if bad:
        raise ScenarioError(f"--failed: {bad} out of range; allowed: 0..{workers} (workers)")
    out = [(f"failed={f}", f, fail_devices(scenario, f)) for f in failed]
    if steal:
        out.append(("stealing", None, stealing(scenario, *steal)))
    return out


def runnable(strategies: Sequence[str], instances: dict, conditions: list, file: str,
             log: Callable[[str], None]) -> list[tuple[str, str, int | None, Scenario]]:
    """Every (strategy, condition, failed count, scenario) to run: a condition a strategy refuses
    without a pool (e.g. cycle stealing for an end–cloud pipeline, whose cloud must be always
    available) is skipped with a note; a strategy that runs none of them is refused — both before
    any pool is opened or trained."""
    out = []
    for s in strategies:
        refused, reasons = [], set()
        for cond, n_failed, scenario in conditions:
            why = instances[s].refuses(with_strategy(scenario, s))
            if why:
                refused.append(cond)
                reasons.add(why)
                log(f"compare: {s} skips condition {cond}: {why}")
            else:
                out.append((s, cond, n_failed, scenario))
        if len(refused) == len(conditions):
            if len(reasons) == 1:   # one reason, whatever the condition: other conditions would not help
                raise ScenarioError(f"{file}: strategy {s!r} runs none of the conditions ({', '.join(refused)}): "
                                    f"{reasons.pop()}", file=file)
            raise ScenarioError(f"{file}: strategy {s!r} runs none of the conditions ({', '.join(refused)}); "
                                f"choose others with --failed A..B and --stealing none|BUSY,FREE", file=file)
    return out


def run_compare(path: str | Path, strategies: Sequence[str], *, overrides: Sequence[str] = (),
                out: str | Path | None = None, failed: Sequence[int] | None = None,
                steal: tuple[float, float] | None = (10.0, 30.0), engine: str | None = None, plots: bool = True,
                log: Callable[[str], None] = print, progress_factory=None, engine_options=None,
                study: StudyOptions | None = None) -> Path:
    """Every strategy × condition × replication into ``compare.parquet`` (strategy, condition,
    replication order) and ``points/<strategy>/<condition>/``. ``study``: in this process
    (default) or on Ray, and ``--resume`` (:mod:`vip_ray.experiment.study`)."""
    opts = study or StudyOptions()
    base = load_scenario(path, overrides)
    file = str(path)
    strategies = list(dict.fromkeys(strategies))
    if not strategies:
        raise ScenarioError("--strategies: name at least one, e.g. single,mp,cp,vp,vip")
    for s in strategies:
        get_strategy(s, file=file)  # unknown names fail before any work
    name = engine_name(base, engine)
    instances = {s: checked_strategy(with_strategy(base, s), file, name) for s in strategies}
    out_dir = Path(out) if out else Path("results/compare") / f"{base.name}-{uuid.uuid4().hex[:6]}"
    check_new_folder(out_dir)
    conditions = _conditions(base, failed, steal)
    if opts.resume and not out:
        raise RunError("--resume needs --out DIR: the folder of the study to continue")
    todo = runnable(strategies, instances, conditions, file, log)
    points = [StudyPoint(folder=f"points/{s}/{cond}", label=f"{s} {cond}", scenario=with_strategy(scenario, s),
                         strategy=instances[s], engine=name, file=file, overrides=list(overrides),
                         config={"failed_devices": n_failed})
              for s, cond, n_failed, scenario in todo]
    identity = {"kind": "compare", "source": str(Path(path).resolve()), "source_sha256": file_sha256(path),
                "overrides": list(overrides),
                "strategies": strategies, "conditions": [c for c, _, _ in conditions],
                "stealing": list(steal) if steal else None, "engine": engine}
    if check_folders(out_dir, identity, opts.resume, log):
        return out_dir
    plan = plan_cluster(opts, [name], log)
    try:
        pool = open_pool(base, log)
        check_pool(base, pool, file=file, uses_variants=any(i.uses_variants for i in instances.values()))
        pools, extra = open_pools(points, log, opened={(base.pool.root, base.pool.name): pool},
                                  probe=plan is not None)
        identity["pools"] = {p.name: p.bank_sha256 for p in pools.values()}
        if opts.resume:
            check_folders(out_dir, identity, True, log)  # the pool too: a retrained one is another study
    except BaseException:
        if plan is not None and plan.started:
            stop()
        raise
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    with study_folder(out_dir, identity, points, log=log) as tmp:  # kept on a failure once it holds finished points
        engines = run_study(points, tmp, pools, extra, plan, opts, kind="compare", log=log,
                            progress_factory=progress_factory, engine_options=engine_options)
        for p, (s, cond, n_failed, _) in zip(points, todo):
            summary = json.loads((tmp / p.folder / "summary.json").read_text())
            devices = pd.read_parquet(tmp / p.folder / "devices.parquet")
            rows += _rows(s, cond, n_failed, summary, devices)
        table = pd.DataFrame(rows)
        table.to_parquet(tmp / "compare.parquet", index=False)
        summary = {"scenario": base.name, "strategies": strategies, "conditions": [c for c, _, _ in conditions],
                   "stealing": {"busy_mean_s": steal[0], "free_mean_s": steal[1]} if steal else None,
                   "columns": COMPARE_COLUMNS, "wall_s": round(time.time() - t0, 3),
                   "table": mean_table(table).reset_index().to_dict(orient="records")}
        (tmp / "summary.json").write_text(json.dumps(json_safe(summary), indent=2))
        config = run_config(base, pool, engines.get(name) or make_engine(name, engine_options), source=file, overrides=overrides,
                            strategies=strategies, failed=[c for _, c, _ in conditions if c is not None],
                            stealing=list(steal) if steal else None)
        (tmp / "config.yaml").write_text(yaml.dump(json_safe(config), Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False))
        if plots:
            plot_compare(table, tmp / "compare.png", title=f"{base.name}: strategies compared")
        from vip_ray.coach.report import end_cloud_tables

        end_cloud_tables(tmp, base, strategies)  # end_cloud.csv (+ phases, png) when end–cloud strategies ran
    return out_dir


def _rows(strategy: str, cond: str, n_failed: int | None, summary: dict, devices: pd.DataFrame) -> list[dict]:
    metrics = summary["metrics"]
    topm = next(k for k in metrics if k.startswith("accuracy_top") and k != "accuracy_top1")
    out = []
    for rep in range(summary["replications"]):
        d = devices[devices["replication"] == rep]
        busy = d[d["macs_per_request"] > 0]
        v = {k: m["per_replication"][rep] for k, m in metrics.items()}
        out.append({"strategy": strategy, "condition": cond,
                    "failed_devices": float("nan") if n_failed is None else n_failed, "replication": rep,
                    "requests": int(v["requests"]), "answered": v["answered"], "deadline_met": v["deadline_met"],
                    "accuracy_top1": v["accuracy_top1"], "accuracy_topM": v[topm],
                    "latency_p50_ms": 1e3 * v["latency_p50_s"], "latency_p99_ms": 1e3 * v["latency_p99_s"],
                    "bytes_per_request": v["bytes_per_request"],
                    "macs_per_device": int(busy["macs_per_request"].max()) if len(busy) else 0,
                    "macs_total": int(busy["macs_per_request"].sum()), "devices_used": int(len(busy)),
                    **_energy_row(v, d)})
    return out


def _energy_row(v: dict, d: pd.DataFrame) -> dict:
    """The energy columns of one replication's row (NaN without a power model)."""
    nan = float("nan")
    n = max(v["requests"], 1)
    row = {"energy_per_request_j": v.get("energy_per_request_j", nan),
           "energy_per_correct_j": v.get("energy_per_correct_j", nan)}
    for part in ("compute", "radio", "idle"):
        col = f"energy_{part}_j"
        row[f"energy_{part}_per_request_j"] = float(d[col].sum()) / n if col in d and d[col].notna().any() else nan
    for stage in ("t_down", "t_queue", "t_compute", "t_paused", "t_up", "t_wait", "t_aggregate"):
        row[f"{stage}_mean_ms"] = 1e3 * v.get(f"{stage}_s_mean", nan)
    return row


def mean_table(table: pd.DataFrame) -> pd.DataFrame:
    """Means over replications, one row per strategy × condition (in run order)."""
    cols = [c for c in COMPARE_COLUMNS if c not in ("strategy", "condition", "failed_devices", "replication")
            and c in table]
    return table.groupby(["strategy", "condition"], sort=False)[cols].mean()


#: Markers and line styles cycled over strategies, so lines that coincide stay apart (with a small x offset).
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_LINES = ("-", "--", "-.", ":")


def strategy_styles(strategies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One colour, marker and line style per strategy, the same in every panel of compare.png."""
    import matplotlib

    colors = matplotlib.colormaps["tab10"].colors
    return {s: {"color": colors[i % len(colors)], "marker": _MARKERS[i % len(_MARKERS)],
                "linestyle": _LINES[i % len(_LINES)]} for i, s in enumerate(strategies)}


def _bar_keys(solid: str, hatched: str) -> list:
    """Legend keys in grey: the bars' colours are the strategies', the fill says which measure."""
    from matplotlib.patches import Patch

    return [Patch(facecolor="0.45", label=solid), Patch(facecolor="0.45", alpha=0.45, hatch="//", label=hatched)]


def compare_figure(table: pd.DataFrame, *, title: str):
    """Six panels; one legend for the strategies above them all (each strategy has its own colour,
    marker and line style everywhere), and each panel's own keys (p50/p99, the two bars) in it."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from vip_ray.experiment.energy_plots import energy_panels

    means = mean_table(table).reset_index()
    fail = means[means["condition"].str.startswith("failed=")].copy()
    fail["n"] = fail["condition"].str.slice(len("failed=")).astype(int)
    strategies = list(dict.fromkeys(means["strategy"]))
    style = strategy_styles(strategies)
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.6))
    spread = 0.08  # x offset between strategies, so identical points are all visible
    for i, s in enumerate(strategies):
        f = fail[fail["strategy"] == s].sort_values("n")
        x = f["n"] + (i - (len(strategies) - 1) / 2) * spread
        st = style[s]
        axes[0, 0].plot(x, 100 * f["accuracy_top1"], ms=5, **st)
        axes[0, 1].plot(x, 100 * f["answered"], ms=5, **st)
        axes[0, 2].plot(x, f["latency_p50_ms"], ms=5, **st)
        axes[0, 2].plot(x, f["latency_p99_ms"], ms=5, color=st["color"], marker=st["marker"], mfc="none",
                        linestyle=":", alpha=0.6)
    for ax, label in ((axes[0, 0], "top-1 accuracy of all requests (%)"), (axes[0, 1], "answered (% of requests)"),
                      (axes[0, 2], "latency of answered requests (ms, log)")):
        ax.set_xlabel("failed devices (most capable first)")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0, 2].set_yscale("log")
    axes[0, 2].legend(handles=[Line2D([], [], color="0.3", marker="o", label="p50 (filled, solid)"),
                               Line2D([], [], color="0.3", marker="o", mfc="none", linestyle=":", alpha=0.6,
                                      label="p99 (hollow, dotted)")], fontsize=7, loc="best")
    base = means[means["condition"] == "failed=0"].set_index("strategy").reindex(strategies)
    x = np.arange(len(strategies))
    colors = [style[s]["color"] for s in strategies]
    axes[1, 0].bar(x, base["bytes_per_request"], color=colors)
    axes[1, 0].set_yscale("log")
    axes[1, 0].set_ylabel("bytes on the wire per request (log)")
    axes[1, 1].bar(x - 0.2, base["macs_per_device"] / 1e6, width=0.4, color=colors, label="busiest device")
    axes[1, 1].bar(x + 0.2, base["macs_total"] / 1e6, width=0.4, color=colors, alpha=0.45, hatch="//",
                   label="all devices")
    axes[1, 1].set_ylabel("MMACs per request")
    axes[1, 1].legend(handles=_bar_keys("busiest device", "all devices"), fontsize=7)
    steal = means[means["condition"] == "stealing"].set_index("strategy").reindex(strategies)
    if steal["answered"].notna().any():
        axes[1, 2].bar(x - 0.2, 100 * steal["deadline_met"], width=0.4, color=colors, label="deadline met")
        axes[1, 2].bar(x + 0.2, 100 * steal["accuracy_top1"], width=0.4, color=colors, alpha=0.45, hatch="//",
                       label="top-1 accuracy")
        axes[1, 2].set_ylabel("% of requests under cycle stealing")
        axes[1, 2].legend(handles=_bar_keys("deadline met", "top-1 accuracy"), fontsize=7)
        for xi in x[steal["answered"].isna().to_numpy()]:   # a strategy that cannot run it (run_compare's note)
            axes[1, 2].text(xi, 2, "skipped:\ncannot run", ha="center", va="bottom", fontsize=7, color="0.4")
        axes[1, 2].set_xlim(-0.5, len(strategies) - 0.5)
    else:
        axes[1, 2].text(0.5, 0.5, "no cycle-stealing condition\n(--stealing none, or no strategy can run it)",
                        ha="center", va="center", transform=axes[1, 2].transAxes, fontsize=8, color="0.4")
    for ax, what in zip(axes[1], ("no failures", "no failures", "cycle stealing")):
        ax.set_xticks(x, strategies)
        ax.set_title(what, fontsize=8, color="0.3")
    energy_panels(axes[0, 3], axes[1, 3], means, strategies, style)
    handles = [Line2D([], [], **style[s], label=s) for s in strategies]
    fig.legend(handles=handles, loc="upper center", ncol=len(strategies), bbox_to_anchor=(0.5, 0.955),
               title="strategy (same colour, marker and line in every panel)", fontsize=8, title_fontsize=8,
               frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.915))
    return fig


def plot_compare(table: pd.DataFrame, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = compare_figure(table, title=title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    from vip_ray.experiment.energy_plots import compare_breakdown_figure
    from vip_ray.experiment.plots import new_figure

    means = mean_table(table).reset_index()
    compare_breakdown_figure(means, list(dict.fromkeys(means["strategy"])), new_figure).savefig(
        path.parent / "latency_breakdown.png", dpi=110)
