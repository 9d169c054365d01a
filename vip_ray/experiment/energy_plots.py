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
