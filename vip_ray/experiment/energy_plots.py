"""Energy panels of ``compare.png`` and the latency-breakdown bars (kept apart from the other
panels' code: they read only the energy and breakdown columns)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

ENERGY_PARTS = (("energy_compute_per_request_j", "compute"), ("energy_radio_per_request_j", "radio"),
                ("energy_idle_per_request_j", "idle"))


def pareto_front(cost: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (lower ``cost`` and higher ``gain``, one of them
    strictly), by increasing cost."""
    order = np.lexsort((-gain, cost))
    front, best = [], -np.inf
    for i in order:
        if gain[i] > best:
            front.append(i)
            best = gain[i]
    return np.array(front, dtype=np.int64)


def _no_energy(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no energy model\n({what})", ha="center", va="center", transform=ax.transAxes,
            fontsize=8, color="0.4")


def energy_panels(ax_pareto, ax_parts, means: pd.DataFrame, strategies: Sequence[str], style: dict[str, Any]) -> None:
    """Energy per correct answer vs top-1 accuracy (every strategy × condition; the Pareto front
    drawn through the points no other beats), and each strategy's energy per request split into
    compute, radio and idle (no failures)."""
    if "energy_per_correct_j" not in means or means["energy_per_correct_j"].isna().all():
        _no_energy(ax_pareto, "set power / radio in the device and network profiles")
        _no_energy(ax_parts, "no failures")
        return
    ok = means.dropna(subset=["energy_per_correct_j"])
    for s in strategies:
        f = ok[ok["strategy"] == s]
        ax_pareto.scatter(100 * f["accuracy_top1"], f["energy_per_correct_j"], color=style[s]["color"],
                          marker=style[s]["marker"], s=22)
    cost, gain = ok["energy_per_correct_j"].to_numpy(float), ok["accuracy_top1"].to_numpy(float)
    front = pareto_front(cost, gain)
    ax_pareto.plot(100 * gain[front], cost[front], color="0.3", linestyle="--", linewidth=1, label="Pareto front")
    ax_pareto.set_xlabel("top-1 accuracy of all requests (%)")
    ax_pareto.set_ylabel("energy per correct answer (J, log)")
    ax_pareto.set_yscale("log")
    ax_pareto.grid(alpha=0.3)
    ax_pareto.legend(fontsize=7, loc="best")
    ax_pareto.set_title("every condition", fontsize=8, color="0.3")
    base = means[means["condition"] == "failed=0"].set_index("strategy").reindex(strategies)
    x = np.arange(len(strategies))
    bottom = np.zeros(len(strategies))
    greys = ("0.25", "0.55", "0.8")
    for (col, label), grey in zip(ENERGY_PARTS, greys):
        v = base[col].to_numpy(float) if col in base else np.zeros(len(strategies))
        v = np.nan_to_num(v)
        ax_parts.bar(x, v, bottom=bottom, color=grey, edgecolor=[style[s]["color"] for s in strategies],
                     linewidth=1.5, label=label)
        bottom += v
    ax_parts.set_xticks(x, strategies)
    ax_parts.set_ylabel("energy per request (J), all devices")
    ax_parts.legend(fontsize=7)
    ax_parts.set_title("no failures", fontsize=8, color="0.3")


#: stage columns, their labels and greys in the stacked latency bars
STAGES = (("t_down_s", "downlink"), ("t_queue_s", "queue"), ("t_compute_s", "compute"), ("t_paused_s", "paused"),
          ("t_up_s", "uplink"), ("t_wait_s", "master waits"), ("t_aggregate_s", "aggregate"))


def stacked_breakdown(ax, labels: Sequence[str], means_ms: np.ndarray, *, edge=None) -> None:
    """Bars of ``means_ms`` (rows: ``labels``, columns: :data:`STAGES`) stacked stage on stage."""
    import matplotlib

    colors = matplotlib.colormaps["tab10"].colors
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for j, (_, label) in enumerate(STAGES):
        v = np.nan_to_num(means_ms[:, j]) if len(labels) else np.zeros(0)
        ax.bar(x, v, bottom=bottom, color=colors[j], label=label, edgecolor=edge, linewidth=1.2 if edge else 0)
        bottom += v
    ax.set_xticks(x, labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    ax.set_ylabel("mean latency of answered requests (ms)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)


#: bars in a run's breakdown plot: past this many decisive devices (a city has thousands) the ones
#: that decided fewest requests share one bar, so the plot stays readable and takes milliseconds
MAX_DEVICE_BARS = 24


def breakdown_by_device(requests: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per decisive device: its name, the mean of each stage (ms) and the requests it decided. With
    more than :data:`MAX_DEVICE_BARS` devices, the ``MAX_DEVICE_BARS − 1`` that decided most keep
    their bars (in device order) and the rest are one bar, ``other N devices``, over their requests."""
    cols = [c for c, _ in STAGES]
    ok = requests.dropna(subset=cols)
    ok = ok[ok["decisive_device"].notna()]
    if not len(ok):
        return [], np.zeros((0, len(cols))), np.zeros(0, dtype=np.int64)
    g = ok.groupby("decisive_device", observed=True)
    sums, counts = g[cols].sum(), g.size()
    counts = counts[counts > 0]
    sums = sums.reindex(counts.index)
    names = [str(n) for n in counts.index]
    totals, n = sums.to_numpy(), counts.to_numpy()
    if len(names) > MAX_DEVICE_BARS:
        keep = np.sort(np.argsort(-n, kind="stable")[:MAX_DEVICE_BARS - 1])
        rest = np.setdiff1d(np.arange(len(names)), keep)
        names = [names[i] for i in keep] + [f"other {len(rest):,} devices"]
        totals = np.vstack([totals[keep], totals[rest].sum(axis=0)])
        n = np.concatenate([n[keep], [n[rest].sum()]])
    return names, 1e3 * totals / n[:, None], n


def run_breakdown_plot(run_dir, new_figure) -> list:
    """``latency_breakdown.png`` of a run: per decisive device, where its requests' latency went
    (nothing when no request has a breakdown: the Serve engine's fan-outs). ``new_figure``:
    :func:`vip_ray.experiment.plots.new_figure` (passed in: that module calls this one)."""
    from pathlib import Path

    run_dir = Path(run_dir)
    cols = ["decisive_device"] + [c for c, _ in STAGES]
    try:
        req = pd.read_parquet(run_dir / "requests.parquet", columns=cols)
    except (KeyError, ValueError, OSError):      # a run written before the breakdown existed
        return []
    names, means, counts = breakdown_by_device(req)
    if not names:
        return []
    fig, ax = new_figure(figsize=(max(5.0, 0.7 * len(names) + 2), 4.2), dpi=120)
    stacked_breakdown(ax, [f"{n}\n({c} req.)" for n, c in zip(names, counts)], means)
    ax.set_title("where the latency went, by the device whose reply decided it", fontsize=9)
    fig.tight_layout()
    path = run_dir / "latency_breakdown.png"
    fig.savefig(path, dpi="figure", pil_kwargs={"compress_level": 3})   # laid out and saved at one dpi
    return [path]


def compare_breakdown_figure(means: pd.DataFrame, strategies: Sequence[str], new_figure):
    """Per strategy (no failures): where its answered requests' latency went."""
    cols = [f"{c[:-2]}_mean_ms" for c, _ in STAGES]
    base = means[means["condition"] == "failed=0"].set_index("strategy").reindex(strategies)
    vals = base[cols].to_numpy(float) if all(c in base for c in cols) else np.full((len(strategies), len(cols)), np.nan)
    fig, ax = new_figure(figsize=(max(5.0, 0.9 * len(strategies) + 2), 4.2))
    stacked_breakdown(ax, list(strategies), vals)
    ax.set_title("where the latency went, per strategy (no failures; NaN: not reported)", fontsize=9)
    fig.tight_layout()
    return fig
