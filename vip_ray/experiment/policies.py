"""``vip-sim compare FILE --policies static,reactive,...``: the master's online controllers
(:mod:`vip_ray.control`) side by side on the same scenario, strategy and seeds.

A name is a registered policy, or ``POLICY+anytime`` (the margin rule on top of it), ``POLICY+adaptive_k``
(each device's top-k from its up-link) or both. Output::

    policies.parquet   one row per policy × replication: POLICY_COLUMNS
    points/<policy>/   requests.parquet, devices.parquet, summary.json, config.yaml
    policies.png       accuracy within the deadline vs p99 latency, one marker per policy
    summary.json
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

#: the comparison table: the strategy comparison's figures, plus the controller's
POLICY_COLUMNS: dict[str, str] = {
    "policy": "controller (control.policy; +anytime: the margin rule on top; +adaptive_k: each device's k)",
    "replication": "replication index (seed = seeds.base + replication)",
    "requests": "requests simulated",
    "answered": "fraction of requests answered (in time, or late by the scenario's fallback)",
    "deadline_met": "fraction answered within the deadline",
    "accuracy_top1": "fraction of all requests answered with the right class",
    "accuracy_in_deadline": "fraction of all requests answered with the right class within the deadline",
    "accuracy_topM": "the same as accuracy_top1 for the top-M classes",
    "latency_p50_ms": "median latency of answered requests, ms",
    "latency_p99_ms": "99th-percentile latency of answered requests, ms",
    "latency_mean_ms": "mean latency of answered requests, ms",
    "bytes_per_request": "bytes on the wire per request (down + up), B",
    "redeployments": "variant changes on the devices' timelines after t = 0",
}


#: options every policy takes that ``POLICY+OPTION`` switches on
COMBINES = ("anytime", "adaptive_k")


def policy_overrides(name: str) -> list[str]:
    """``reactive+anytime`` (``+adaptive_k``, or both) -> the ``--set`` overrides that pick it."""
    base, *extras = name.split("+")
    out = [f"control.policy={base}"]
    for extra in extras:
        if extra not in COMBINES:
            from vip_ray.scenario import ScenarioError

            raise ScenarioError(f"--policies: {name!r}: only {' and '.join(repr('+' + c) for c in COMBINES)} "
                                f"combine with a policy")
        out.append(f"control.{extra}=true")
    return out


def run_policies(path: str | Path, policies: Sequence[str], *, overrides: Sequence[str] = (),
                 out: str | Path | None = None, engine: str | None = None,
                 log: Callable[[str], None] = print, progress_factory=None) -> Path:
    """Every policy of ``policies`` on the scenario at ``path`` (same seeds), in this process;
    every name and option is checked before the pool is opened."""
    from datetime import datetime

    from vip_ray.core.engine import make_engine
    from vip_ray.core.results import atomic_directory, check_new_folder
    from vip_ray.experiment.run import (checked_strategy, engine_name, json_safe, open_pool, refuse_up_front,
                                        run_point)
    from vip_ray.scenario import load_scenario
    from vip_ray.scenario.load import check_pool

    file = str(path)
    if not policies:
        from vip_ray.control import POLICIES
        from vip_ray.scenario import ScenarioError

        raise ScenarioError(f"--policies: none given; allowed: {', '.join(POLICIES.names())} "
                            f"(and NAME+anytime, NAME+adaptive_k)")
    points = []
    for name in policies:    # validate them all first
        scenario = load_scenario(path, [*overrides, *policy_overrides(name)])
        eng = engine_name(scenario, engine)
        strategy = checked_strategy(scenario, file, eng)
        refuse_up_front(strategy, scenario, file)
        points.append((name, scenario, strategy, eng))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out) if out else Path("results/compare") / f"{points[0][1].name}-policies-{stamp}"
    check_new_folder(out_dir)
    pool = open_pool(points[0][1], log)
    rows = []
    with atomic_directory(out_dir) as tmp:
        for name, scenario, strategy, eng_name in points:
            check_pool(scenario, pool, file=file, uses_variants=strategy.uses_variants)
            folder = tmp / "points" / name.replace("+", "_")
            folder.parent.mkdir(parents=True, exist_ok=True)
            log(f"policy {name}")
            with make_engine(eng_name, log=log) as e:
                summary = run_point(e, strategy, scenario, pool, folder, file=file,
                                    overrides=[*overrides, *policy_overrides(name)], log=log)
            rows += _rows(name, summary, pd.read_parquet(folder / "requests.parquet",
                                                         columns=["replication", "correct_top1", "deadline_met"]))
        table = pd.DataFrame(rows, columns=list(POLICY_COLUMNS))
        table.to_parquet(tmp / "policies.parquet", index=False)
        (tmp / "summary.json").write_text(json.dumps(json_safe(
            {"scenario": points[0][1].name, "policies": list(policies), "overrides": list(overrides),
             "columns": POLICY_COLUMNS}), indent=2))
        policy_plot(table, tmp / "policies.png", title=points[0][1].name)
    return out_dir


def _rows(policy: str, summary: dict, requests: pd.DataFrame) -> list[dict]:
    metrics = summary["metrics"]
    topm = next(k for k in metrics if k.startswith("accuracy_top") and k != "accuracy_top1")
    out = []
    for rep in range(summary["replications"]):
        v = {k: m["per_replication"][rep] for k, m in metrics.items()}
        r = requests[requests["replication"] == rep]
        out.append({"policy": policy, "replication": rep, "requests": int(v["requests"]),
                    "answered": v["answered"], "deadline_met": v["deadline_met"],
                    "accuracy_top1": v["accuracy_top1"],
                    "accuracy_in_deadline": float((r["correct_top1"] & r["deadline_met"]).mean()),
                    "accuracy_topM": v[topm], "latency_p50_ms": 1e3 * v["latency_p50_s"],
                    "latency_p99_ms": 1e3 * v["latency_p99_s"], "latency_mean_ms": 1e3 * v["latency_mean_s"],
                    "bytes_per_request": v["bytes_per_request"],
                    "redeployments": int(summary.get("redeployments_per_replication", [0] * (rep + 1))[rep])})
    return out


def mean_policy_table(table: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in POLICY_COLUMNS if c not in ("policy", "replication")]
    return table.groupby("policy", sort=False)[cols].mean()


def policy_plot(table: pd.DataFrame, path: Path, title: str = "", ax=None, legend: bool = True) -> None:
    """Accuracy within the deadline vs p99 latency, one marker per policy (mean over replications,
    bars: the replications' spread). Policies that land on the same point stay visible: hollow
    markers, each its own colour and shape, drawn from the largest to the smallest (concentric),
    and the point is labelled with their names. ``legend`` False: the caller draws one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5.5, 4))
    groups = list(table.groupby("policy", sort=False))
    colours = plt.get_cmap("tab10").colors
    points: list[tuple[float, float, str]] = []
    for i, (name, g) in enumerate(groups):
        x, y = g["latency_p99_ms"].to_numpy(), 100 * g["accuracy_in_deadline"].to_numpy()
        ax.errorbar(x.mean(), y.mean(), xerr=np.ptp(x) / 2, yerr=np.ptp(y) / 2, fmt="os^DvPX*"[i % 8],
                    color=colours[i % len(colours)], markerfacecolor="none", markeredgewidth=1.6,
                    markersize=max(4.0, 15.0 - 2.0 * i), label=name, capsize=3, zorder=2 + i)
        points.append((float(x.mean()), float(y.mean()), name))
    # policies on one point (within 2 % of the axes' spans, where their markers overlap): say which
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    tol_x, tol_y = 0.02 * max(np.ptp(xs), 1e-9), 0.02 * max(np.ptp(ys), 1e-9)
    left = list(range(len(points)))
    while left:
        i = left.pop(0)
        near = [j for j in left if abs(xs[j] - xs[i]) <= tol_x and abs(ys[j] - ys[i]) <= tol_y]
        left = [j for j in left if j not in near]
        if near:   # the label runs inwards from a point near either side (not over the axis labels)
            frac = (xs[i] - xs.min()) / max(np.ptp(xs), 1e-9)
            ha, dx = ("left", -8) if frac < 0.33 else ("right", 8) if frac > 0.67 else ("center", 0)
            ax.annotate(" = ".join(points[j][2] for j in [i, *near]), (xs[i], ys[i]), xytext=(dx, -16),
                        textcoords="offset points", ha=ha, va="top", fontsize=7, color="0.25")
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("accuracy within the deadline (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.2)
    if legend:
        ax.legend(fontsize=8)
    if own:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
