"""Plots of a run directory: latency CDF, accuracy vs responders, per-device response timeline.

The request table is read in row batches and reduced to fixed-size histograms, so plotting a
10M-request run needs as little memory as plotting a small one. Each plot says what it leaves
out: the CDF stops at twice the deadline and counts the requests past it (and those never
answered); the timeline pools every replication and states its bin width.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from vip_ray.experiment.canvas import drawing, key, margins, new_figure, save_png, text_width, ticks_within
from vip_ray.experiment.energy_plots import STAGES, add_breakdown, device_bars, latency_breakdown_figure

CDF_BINS = 2000
TIME_BINS = 40
#: The latency CDF is drawn up to this multiple of the deadline; later answers are counted, not drawn.
CDF_SPAN = 2.0
TIMELINE_DEVICES = 40   # more devices than this: the availability timeline shows device groups
#: Pixels per inch of the run plots: the figures are laid out and drawn at the dpi they are saved at,
#: so the text measured for the layout is the text drawn (one renderer, its text metrics cached).
DPI = 120


def _reduce(run_dir: Path, deadline: float, names: list[str], row_of: dict[str, int] | None = None,
            weight: np.ndarray | None = None, batch_size: int = 500_000) -> dict:
    """Histograms of the request table, read in batches: latency per replication (up to
    CDF_SPAN × deadline, with the answers past it and the unanswered counted), accuracy per
    responder count, the per-device share of requests answered in time per arrival-time
    bin, every replication pooled, and the latency breakdown's sums per decisive device
    (``breakdown``: names, mean stage times in ms, requests; empty for a table without it)."""
    row_of = {n: i for i, n in enumerate(names)} if row_of is None else row_of
    weight = np.ones(len(names)) if weight is None else weight
    f = pq.ParquetFile(run_dir / "requests.parquet")
    cols = ["replication", "arrival_s", "latency_s", "n_responders", "correct_top1", "responders"]
    stages = [c for c, _ in STAGES]
    with_breakdown = {"decisive_device", *stages} <= set(f.schema_arrow.names)   # not in older runs
    cols += ["decisive_device", *stages] if with_breakdown else []
    stage_sums: dict[str, np.ndarray] = {}
    decided: dict[str, int] = {}
    arr = pq.read_table(run_dir / "requests.parquet", columns=["arrival_s"])["arrival_s"].to_numpy()
    t_bins = np.linspace(arr.min(), arr.max() + 1e-9, TIME_BINS + 1)
    del arr
    lat_edges = np.linspace(0.0, CDF_SPAN * deadline, CDF_BINS + 1)
    lat_hist: dict[int, np.ndarray] = {}
    n_rep: dict[int, int] = {}
    late: dict[int, int] = {}        # answered after CDF_SPAN × deadline
    unanswered: dict[int, int] = {}  # never answered (latency NaN)
    by_resp_n = np.zeros(0)
    by_resp_ok = np.zeros(0)
    hits = np.zeros((len(names), TIME_BINS))
    per_bin = np.zeros(TIME_BINS)
    for batch in f.iter_batches(batch_size=batch_size, columns=cols):
        b = batch.to_pandas()
        if with_breakdown:
            add_breakdown(b, stage_sums, decided)
        reps, lats = b["replication"].to_numpy(), b["latency_s"].to_numpy(dtype=float)
        for rep in np.unique(reps).tolist():
            lat = lats[reps == rep]
            answered = lat[~np.isnan(lat)]
            h, _ = np.histogram(answered[answered <= lat_edges[-1]], bins=lat_edges)
            lat_hist[rep] = lat_hist.get(rep, 0) + h
            n_rep[rep] = n_rep.get(rep, 0) + len(lat)
            late[rep] = late.get(rep, 0) + int((answered > lat_edges[-1]).sum())
            unanswered[rep] = unanswered.get(rep, 0) + int(len(lat) - len(answered))
        nr = b["n_responders"].to_numpy()
        size = max(len(by_resp_n), nr.max() + 1)
        by_resp_n = np.pad(by_resp_n, (0, size - len(by_resp_n))) + np.bincount(nr, minlength=size)
        by_resp_ok = np.pad(by_resp_ok, (0, size - len(by_resp_ok))) + np.bincount(
            nr, weights=b["correct_top1"].to_numpy(), minlength=size)
        which = np.clip(np.digitize(b["arrival_s"].to_numpy(), t_bins) - 1, 0, TIME_BINS - 1)
        per_bin += np.bincount(which, minlength=TIME_BINS)
        resp = b["responders"].astype("category")
        codes = resp.cat.codes.to_numpy()
        # membership per distinct responder set (one pass over its names), then gathered by code
        member = np.zeros((len(names), len(resp.cat.categories) + 1))
        for c, cat in enumerate(resp.cat.categories):
            for n in str(cat).split(","):
                i = row_of.get(n)
                if i is not None:
                    member[i, c] += weight[i]
        for i in range(len(names)):
            hits[i] += np.bincount(which, weights=member[i][codes], minlength=TIME_BINS)
    return {"lat_edges": lat_edges, "lat_hist": lat_hist, "n_rep": n_rep, "late": late, "unanswered": unanswered,
            "by_resp_n": by_resp_n, "by_resp_ok": by_resp_ok, "timeline": hits / np.maximum(per_bin, 1),
            "per_bin": per_bin, "t_bins": t_bins, "replications": len(n_rep),
            "breakdown": device_bars(list(decided), np.array([stage_sums[d] for d in decided]).reshape(-1, len(stages)),
                                     np.array(list(decided.values()), dtype=np.int64))}


def latency_cdf_figure(red: dict, deadline: float, scenario: str):
    fig, ax = new_figure(figsize=(5.4, 3.9), dpi=DPI)
    entries = []
    for k, rep in enumerate(sorted(red["lat_hist"])):
        cdf = np.cumsum(red["lat_hist"][rep]) / red["n_rep"][rep]
        # replications often coincide: each its own dash and a thinner line drawn on top, so none hides
        style = {"color": f"C{k % 10}", "lw": max(2.2 - 0.5 * k, 0.8), "ls": _LINE_STYLES[k % len(_LINE_STYLES)]}
        ax.step(*_steps(red["lat_edges"][1:] * 1e3, cdf), where="post", zorder=2 + k, **style)
        entries.append((style, f"replication {rep}"))
    deadline_style = {"color": "k", "ls": "--", "lw": 0.8}
    ax.axvline(deadline * 1e3, **deadline_style)
    entries.append((deadline_style, f"deadline {deadline * 1e3:g} ms"))
    total = sum(red["n_rep"].values())
    late, never = sum(red["late"].values()), sum(red["unanswered"].values())
    note = (f"not drawn: {late:,} of {total:,} requests ({100 * late / max(total, 1):.2f} %) answered after "
            f"{CDF_SPAN:g}× the deadline\nand {never:,} ({100 * never / max(total, 1):.2f} %) never answered")
    # below the axes (figure corner), where it hides no line
    ax.annotate(note, xy=(0.02, 0.02), xycoords="figure fraction", fontsize=6.5, va="bottom")
    ax.set_xlim(0, CDF_SPAN * deadline * 1e3)
    ax.set_ylim(0, 1.02)
    ticks_within(ax.xaxis, 0, CDF_SPAN * deadline * 1e3)
    ticks_within(ax.yaxis, 0, 1)
    ax.set_xlabel(f"latency (ms), up to {CDF_SPAN:g}× the deadline")
    ax.set_ylabel("fraction of all requests answered")
    ax.set_title(f"{scenario}: latency CDF", fontsize=10, y=1.0)
    key(ax, entries, at=(1, 0), corner="lower right", size=7)   # where a CDF has reached 1: no line there
    margins(fig, left=0.62, bottom=0.82, right=0.2, top=0.3)
    return fig


def accuracy_vs_responders_figure(red: dict):
    n, ok = red["by_resp_n"], red["by_resp_ok"]
    xs = np.flatnonzero(n)
    acc = 100 * ok[xs] / n[xs]
    fig, ax = new_figure(figsize=(5, 3.4), dpi=DPI)
    ax.bar(xs, acc, color="#1f77b4")
    for x, a, c in zip(xs, acc, n[xs]):
        ax.text(x, a, f"{a:.1f}%\nn={int(c):,}", ha="center", va="bottom", fontsize=6)
    if len(xs):
        ax.set_xlim(xs.min() - 0.6, xs.max() + 0.6)
        ticks_within(ax.xaxis, xs.min(), xs.max(), nbins=8, integer=True)  # whole numbers of devices
    ax.set_xlabel("devices that answered in time (responders per request)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 110)
    ticks_within(ax.yaxis, 0, 100)
    ax.set_title("graceful degradation: accuracy vs responders", fontsize=10, y=1.0)
    margins(fig, left=0.62, bottom=0.5, right=0.12, top=0.3)
    return fig


def availability_timeline_figure(red: dict, names: list[str]):

    t_bins = red["t_bins"]
    width = float(t_bins[1] - t_bins[0])
    left = text_width(names, 7, DPI) + 0.45
    # long names widen the figure, not squeeze the plot; sized before it is made (one renderer)
    w, h = max(6.4, 5.3 + left), 0.35 * len(names) + 1.6
    fig, ax = new_figure(figsize=(w, h), dpi=DPI)
    im = ax.imshow(red["timeline"], aspect="auto", cmap="viridis", vmin=0, vmax=1,
                   extent=(t_bins[0], t_bins[-1], len(names) - 0.5, -0.5))
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ticks_within(ax.xaxis, t_bins[0], t_bins[-1], nbins=8)
    ax.set_ylabel("device", fontsize=8)
    ax.set_xlabel(f"arrival time (s), bins of {width:.3g} s")
    reps = red["replications"]
    pooled = f"all {reps} replications pooled" if reps > 1 else "1 replication"
    ax.set_title(f"share of requests each device answered in time ({pooled})", fontsize=9, y=1.0)
    # the colour bar in its own axes placed by margins too (0.2 in wide, 0.25 in right of the plot,
    # its labels in the last 0.6 in), not carved out of the plot's grid cell
    bottom, top, bar_w, gap, labels = 0.5, 0.3, 0.2, 0.25, 0.6
    margins(fig, left=left, bottom=bottom, right=labels + bar_w + gap, top=top)
    cax = fig.add_axes(((w - labels - bar_w) / w, bottom / h, bar_w / w, (h - bottom - top) / h))
    bar = fig.colorbar(im, cax=cax, ticks=[0, 0.5, 1])   # its ends and middle: the colours carry the rest
    bar.set_label("share answered in time", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    return fig


_LINE_STYLES = ("-", "--", "-.", ":")


def _steps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The corners of a post-step curve: the points where ``y`` changes, and the ends. The same
    line as all ``CDF_BINS`` points (a flat run adds nothing) with a few dozen vertices to
    stroke instead of thousands, which matters most for dashed lines."""
    keep = np.r_[True, y[1:] != y[:-1]]
    keep[-1] = True
    return x[keep], y[keep]


def run_plots(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    deadline = summary["deadline_s"]
    devices = pd.read_parquet(run_dir / "devices.parquet")
    first = devices[devices["replication"] == devices["replication"].min()]
    names = list(first["device"])
    row_of = weight = None
    if len(names) > TIMELINE_DEVICES:   # a city: one row per device group (mean over its devices)
        groups = list(dict.fromkeys(first["group"]))
        gi = {g: i for i, g in enumerate(groups)}
        row_of = {n: gi[g] for n, g in zip(names, first["group"])}
        size = np.bincount([gi[g] for g in first["group"]], minlength=len(groups))
        names, weight = [f"{g} (mean of {k})" for g, k in zip(groups, size)], 1.0 / size
    red = _reduce(run_dir, deadline, names, row_of, weight)
    with drawing():
        paths = [save_png(latency_cdf_figure(red, deadline, summary["scenario"]), run_dir / "latency_cdf.png"),
                 save_png(accuracy_vs_responders_figure(red), run_dir / "accuracy_vs_responders.png"),
                 save_png(availability_timeline_figure(red, names), run_dir / "availability_timeline.png")]
        if red["breakdown"][0]:   # none when no request has a breakdown (older runs)
            paths.append(save_png(latency_breakdown_figure(*red["breakdown"], dpi=DPI),
                                  run_dir / "latency_breakdown.png"))
    return paths
