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


def stacked_breakdown(ax, labels: Sequence[str], means_ms: np.ndarray) -> None:
    """Bars of ``means_ms`` (rows: ``labels``, columns: :data:`STAGES`) stacked stage on stage:
    one polygon collection (one artist to build and draw, not a patch per bar and stage), the
    axes fitted to the tallest bar. The legend stands right of the axes, where it hides no bar
    (and costs no search for a free corner), listing the stages top to bottom as they are stacked."""
    import matplotlib
    from matplotlib.collections import PolyCollection

    from vip_ray.experiment.canvas import key

    colors = matplotlib.colormaps["tab10"].colors[:len(STAGES)]
    n, k = len(labels), len(STAGES)
    v = np.nan_to_num(np.asarray(means_ms, dtype=float).reshape(n, k))
    top = np.cumsum(v, axis=1).ravel()
    low, high = top - v.ravel(), top
    left = np.repeat(np.arange(n) - 0.4, k)               # bars 0.8 wide, as ax.bar draws them
    right = left + 0.8
    verts = np.stack([np.c_[left, low], np.c_[right, low], np.c_[right, high], np.c_[left, high]], axis=1)
    ax.add_collection(PolyCollection(verts, facecolors=list(colors) * n, edgecolors="none"), autolim=False)
    ax.set_xlim(-0.5, n - 0.5)
    tallest = float(top.max()) if n else 0.0
    ax.set_ylim(0, 1.05 * tallest if tallest > 0 else 1.0)   # nothing reported: an empty 0–1 ms axis
    ax.set_xticks(np.arange(n), labels, rotation=30 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_ylabel("mean latency of answered requests (ms)")
    key(ax, [({"patch": c}, label) for c, (_, label) in zip(colors, STAGES)][::-1], at=(1, 1), corner="upper left",
        size=LEGEND_SIZE)
    ax.grid(axis="y", alpha=0.3)


#: font size (points) of the breakdown's key
LEGEND_SIZE = 7

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
    return device_bars([str(n) for n in counts.index], sums.to_numpy(), counts.to_numpy())


def device_bars(names: list[str], totals_s: np.ndarray, n: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The bars of per-device stage sums (s) over ``n`` requests each: their means in ms, and past
    :data:`MAX_DEVICE_BARS` devices the ``MAX_DEVICE_BARS − 1`` that decided most (in device
    order) and one bar, ``other N devices``, over the rest's requests."""
    n = np.asarray(n)
    if len(names) > MAX_DEVICE_BARS:
        keep = np.sort(np.argsort(-n, kind="stable")[:MAX_DEVICE_BARS - 1])
        rest = np.setdiff1d(np.arange(len(names)), keep)
        names = [names[i] for i in keep] + [f"other {len(rest):,} devices"]
        totals_s = np.vstack([totals_s[keep], totals_s[rest].sum(axis=0)])
        n = np.concatenate([n[keep], [n[rest].sum()]])
    return names, 1e3 * totals_s / n[:, None], n


def add_breakdown(requests: pd.DataFrame, sums: dict[str, np.ndarray], counts: dict[str, int]) -> None:
    """Add one batch of the request table to per-decisive-device sums of the stage times (s) and
    counts of requests, over the requests :func:`breakdown_by_device` averages (a decisive device,
    every stage known): the run plots read the table in batches. Bin counts over the device
    codes, not a pandas group-by (whose set-up costs more than the sums, batch after batch)."""
    v = requests[[c for c, _ in STAGES]].to_numpy(dtype=float)
    dev = requests["decisive_device"]
    if isinstance(dev.dtype, pd.CategoricalDtype):
        codes, names = dev.cat.codes.to_numpy(), dev.cat.categories
    else:
        codes, names = pd.factorize(dev)
    ok = (codes >= 0) & ~np.isnan(v).any(axis=1)
    codes, v = codes[ok], v[ok]
    n = np.bincount(codes, minlength=len(names))
    total = np.stack([np.bincount(codes, weights=v[:, j], minlength=len(names)) for j in range(v.shape[1])], axis=1)
    for i in np.flatnonzero(n):
        name = str(names[i])
        sums[name] = sums.get(name, 0.0) + total[i]
        counts[name] = counts.get(name, 0) + int(n[i])


def latency_breakdown_figure(names: Sequence[str], means_ms: np.ndarray, counts: np.ndarray, *, dpi: float = 120):
    """Per decisive device (``names``, the requests each decided: ``counts``), its requests' mean
    stage times (``means_ms``) stacked. Laid out by margins worked from its own texts (see
    :func:`vip_ray.experiment.canvas.margins`): tick labels, axis labels and the key measured."""
    from vip_ray.experiment.canvas import legend_width, margins, new_figure, text_width, ticks_within

    n = len(names)
    labels = [f"{d}\n({c:,} req.)" for d, c in zip(names, counts)]
    line = 10 * 1.2 / 72                                  # one line of a 10-point tick label, in inches
    widest = text_width([part for lab in labels for part in lab.split("\n")], 10, dpi)
    plot_w, plot_h = max(3.2, 0.7 * n + 0.8), 3.2
    if n > 6:   # labels turned 30°, right end at the bar: their height, and how far left the first one reaches
        ticks_h = 0.5 * widest + 0.87 * 2 * line
        reach = 0.87 * widest + 0.5 * 2 * line - plot_w / (2 * n)
    else:
        ticks_h, reach = 2 * line, 0.0
    bottom = 0.1 + ticks_h + 0.32                         # tick and pad, the labels, the axis label
    right = legend_width([label for _, label in STAGES], LEGEND_SIZE, dpi) + 0.12
    fig, ax = new_figure(figsize=(plot_w + 1.0 + right, plot_h + bottom + 0.3), dpi=dpi)
    stacked_breakdown(ax, labels, means_ms)
    top_ms = ax.get_ylim()[1]
    # the y tick labels give the left margin; no renderer exists yet, so resizing drops none
    ticks_within(ax.yaxis, 0, top_ms, nbins=6)
    tick_labels = ax.yaxis.get_major_formatter().format_ticks(ax.get_yticks())
    left = max(text_width(tick_labels, 10, dpi) + 0.45, reach + 0.1)
    fig.set_size_inches(plot_w + left + right, plot_h + bottom + 0.3)
    ax.set_xlabel("decisive device (requests it decided)")
    ax.set_title("where the latency went, by the device whose reply decided it", fontsize=9, y=1.0)
    margins(fig, left=left, bottom=bottom, right=right, top=0.3)
    return fig


def compare_breakdown_figure(means: pd.DataFrame, strategies: Sequence[str], new_figure):
    """Per strategy (no failures): where its answered requests' latency went."""
    cols = [f"{c[:-2]}_mean_ms" for c, _ in STAGES]
    base = means[means["condition"] == "failed=0"].set_index("strategy").reindex(strategies)
    vals = base[cols].to_numpy(float) if all(c in base for c in cols) else np.full((len(strategies), len(cols)), np.nan)
    fig, ax = new_figure(figsize=(max(5.0, 0.9 * len(strategies) + 2) + 1.3, 4.2))   # + the legend
    stacked_breakdown(ax, list(strategies), vals)
    ax.set_title("where the latency went, per strategy (no failures; NaN: not reported)", fontsize=9)
    fig.tight_layout()
    return fig
