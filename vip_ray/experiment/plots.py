"""Plots of a run directory: latency CDF, accuracy vs responders, per-device response timeline.

The request table is read in row batches and reduced to fixed-size histograms, so plotting a
10M-request run needs as little memory as plotting a small one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

CDF_BINS = 2000
TIME_BINS = 40


def _reduce(run_dir: Path, deadline: float, names: list[str]) -> dict:
    f = pq.ParquetFile(run_dir / "requests.parquet")
    cols = ["replication", "arrival_s", "latency_s", "n_responders", "correct_top1", "responders"]
    reps = pq.read_table(run_dir / "requests.parquet", columns=["replication"])["replication"].to_numpy()
    first_rep = reps.min()
    arr = pq.read_table(run_dir / "requests.parquet", columns=["arrival_s"])["arrival_s"].to_numpy()[reps == first_rep]
    t_bins = np.linspace(arr.min(), arr.max() + 1e-9, TIME_BINS + 1)
    del reps, arr
    lat_edges = np.linspace(0.0, 2.0 * deadline, CDF_BINS + 1)
    lat_hist: dict[int, np.ndarray] = {}
    n_rep: dict[int, int] = {}
    by_resp_n = np.zeros(0)
    by_resp_ok = np.zeros(0)
    hits = np.zeros((len(names), TIME_BINS))
    per_bin = np.zeros(TIME_BINS)
    for batch in f.iter_batches(batch_size=500_000, columns=cols):
        b = batch.to_pandas()
        for rep, g in b.groupby("replication"):
            lat = g["latency_s"].to_numpy()
            h, _ = np.histogram(np.clip(lat[~np.isnan(lat)], 0, lat_edges[-1]), bins=lat_edges)
            lat_hist[rep] = lat_hist.get(rep, 0) + h
            n_rep[rep] = n_rep.get(rep, 0) + len(g)
        nr = b["n_responders"].to_numpy()
        size = max(len(by_resp_n), nr.max() + 1)
        by_resp_n = np.pad(by_resp_n, (0, size - len(by_resp_n))) + np.bincount(nr, minlength=size)
        by_resp_ok = np.pad(by_resp_ok, (0, size - len(by_resp_ok))) + np.bincount(
            nr, weights=b["correct_top1"].to_numpy(), minlength=size)
        r0 = b[b["replication"] == first_rep]
        which = np.clip(np.digitize(r0["arrival_s"].to_numpy(), t_bins) - 1, 0, TIME_BINS - 1)
        per_bin += np.bincount(which, minlength=TIME_BINS)
        resp = r0["responders"].astype("category")
        codes = resp.cat.codes.to_numpy()
        for i, n in enumerate(names):  # membership per distinct responder set, then gathered by code
            member = np.array([n in str(c).split(",") for c in resp.cat.categories] + [False])
            hits[i] += np.bincount(which, weights=member[codes], minlength=TIME_BINS)
    return {"lat_edges": lat_edges, "lat_hist": lat_hist, "n_rep": n_rep, "by_resp_n": by_resp_n,
            "by_resp_ok": by_resp_ok, "timeline": hits / np.maximum(per_bin, 1), "t_bins": t_bins}


def run_plots(run_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    deadline = summary["deadline_s"]
    devices = pd.read_parquet(run_dir / "devices.parquet")
    names = list(devices[devices["replication"] == devices["replication"].min()]["device"])
    red = _reduce(run_dir, deadline, names)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for rep in sorted(red["lat_hist"]):
        cdf = np.cumsum(red["lat_hist"][rep]) / red["n_rep"][rep]
        ax.step(red["lat_edges"][1:] * 1e3, cdf, where="post", label=f"rep {rep}", lw=1)
    ax.axvline(deadline * 1e3, color="k", ls="--", lw=0.8, label="deadline")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests answered")
    ax.set_title(f"{summary['scenario']}: latency CDF", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    paths.append(run_dir / "latency_cdf.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    n, ok = red["by_resp_n"], red["by_resp_ok"]
    xs = np.flatnonzero(n)
    acc = 100 * ok[xs] / n[xs]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.bar(xs, acc, color="#1f77b4")
    for x, a, c in zip(xs, acc, n[xs]):
        ax.text(x, a, f"{a:.1f}%\nn={int(c)}", ha="center", va="bottom", fontsize=6)
    ax.set_xlabel("responders per request")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 110)
    ax.set_title("graceful degradation: accuracy vs responders", fontsize=10)
    fig.tight_layout()
    paths.append(run_dir / "accuracy_vs_responders.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    t_bins = red["t_bins"]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.4))
    im = ax.imshow(red["timeline"], aspect="auto", cmap="viridis", vmin=0, vmax=1,
                   extent=(t_bins[0], t_bins[-1], len(names) - 0.5, -0.5))
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title("share of requests each device answered in time (replication 0)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    paths.append(run_dir / "availability_timeline.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
