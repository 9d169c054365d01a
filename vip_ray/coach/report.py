"""The end–cloud figures of a ``vip-sim compare`` directory (written there when any of coach,
neurosurgeon, dads, spinn, jps took part):

* ``end_cloud.csv`` — per strategy × condition (means over replications): latency mean / p99
  (ms), throughput (tasks/s), accuracy, early-exit ratio, KB sent per task, mean bits of what was
  sent, per-stage bubbles (idle seconds of end device, link and cloud between first arrival and
  last answer) and the partition — COACH Table I / II's columns side by side.
* ``end_cloud_phases.csv`` and ``end_cloud.png`` — throughput in each step of the end–cloud
  link's bandwidth trace (COACH Fig. 5), when the scenario has one; else latency and throughput bars.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

END_CLOUD = ("coach", "neurosurgeon", "dads", "spinn", "jps")


def _phases(scenario: Any, strategy_devices: pd.DataFrame) -> list[tuple[float, float, float]] | None:
    """(start, end, Mbps) of each bandwidth step on the end–cloud link, or None without a trace."""
    names = set(strategy_devices["device"])
    for d in scenario.devices:
        if d.name in names and d.role != "master" and d.link is not None and d.link.bandwidth_trace is not None:
            pts = [tuple(p) for p in d.link.bandwidth_trace.points]
            if pts and pts[0][0] > 0:
                pts = [(0.0, d.link.bandwidth_mbps), *pts]
            return [(t, pts[k + 1][0] if k + 1 < len(pts) else np.inf, mbps) for k, (t, mbps) in enumerate(pts)]
    return None


def end_cloud_tables(out_dir: Path, scenario: Any, strategies: Sequence[str]) -> pd.DataFrame | None:
    rows, phase_rows = [], []
    for s in strategies:
        if s not in END_CLOUD:
            continue
        for point in sorted((out_dir / "points" / s).iterdir()):
            req = pd.read_parquet(point / "requests.parquet")
            dev = pd.read_parquet(point / "devices.parquet")
            per_rep = []
            for rep, r in req.groupby("replication"):
                d = dev[dev["replication"] == rep].set_index("role")
                span = float(r["finish_s"].max() - r["arrival_s"].min())
                sent = r["bytes_up"] > 0
                per_rep.append({
                    "latency_mean_ms": 1e3 * r["latency_s"].mean(), "latency_p99_ms": 1e3 * r["latency_s"].quantile(0.99),
                    "throughput_per_s": len(r) / span if span > 0 else np.nan, "accuracy": r["correct_top1"].mean(),
                    "exit_ratio": r["early_exit"].mean(), "kb_per_task": r["bytes_up"].mean() / 1e3,
                    "bits_sent_mean": r.loc[sent, "bits"].mean() if sent.any() else 0.0,
                    **{f"bubble_{k}_s": float(d.loc[k, "bubble_s"]) for k in ("end", "link", "cloud") if k in d.index}})
                phases = _phases(scenario, dev)
                for a, b, mbps in phases or []:
                    fin = r["finish_s"].to_numpy()
                    hi = min(b, float(fin.max()))
                    if hi > a:
                        phase_rows.append({"strategy": s, "condition": point.name, "replication": rep, "from_s": a,
                                           "mbps": mbps, "throughput_per_s": float(((fin >= a) & (fin < b)).sum() / (hi - a))})
            row = pd.DataFrame(per_rep).mean().to_dict()
            row.update(strategy=s, condition=point.name, partition=str(req["partition"].mode().iloc[0]))
            rows.append(row)
    if not rows:
        return None
    table = pd.DataFrame(rows)
    table = table[["strategy", "condition", *[c for c in table.columns if c not in ("strategy", "condition")]]]
    table.to_csv(out_dir / "end_cloud.csv", index=False)
    phases = pd.DataFrame(phase_rows)
    if len(phases):
        phases = phases.groupby(["strategy", "condition", "from_s", "mbps"], sort=False)["throughput_per_s"].mean().reset_index()
        phases.to_csv(out_dir / "end_cloud_phases.csv", index=False)
    _plot(table, phases, out_dir / "end_cloud.png")
    return table


def _plot(table: pd.DataFrame, phases: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = table.groupby("strategy", sort=False).first().reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(base))
    axes[0].bar(x, base["latency_mean_ms"])
    axes[0].set_xticks(x, base["strategy"])
    axes[0].set_ylabel("mean latency (ms)")
    if len(phases):
        first = phases[phases["condition"] == phases["condition"].iloc[0]]
        steps = list(dict.fromkeys(zip(first["from_s"], first["mbps"])))
        strategies = list(dict.fromkeys(first["strategy"]))
        w = 0.8 / max(1, len(strategies))
        for j, s in enumerate(strategies):
            g = first[first["strategy"] == s].set_index(["from_s", "mbps"]).reindex(steps)
            axes[1].bar(np.arange(len(steps)) + j * w, g["throughput_per_s"], width=w, label=s)
        axes[1].set_xticks(np.arange(len(steps)) + 0.4 - w / 2, [f"{m:g} Mbps" for _, m in steps])
        axes[1].set_title("throughput per bandwidth step (COACH Fig. 5)")
        axes[1].legend(fontsize=8)
    else:
        axes[1].bar(x, base["throughput_per_s"])
        axes[1].set_xticks(x, base["strategy"])
    axes[1].set_ylabel("throughput (tasks/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
