"""Plots of a run directory: latency CDF, accuracy/response vs responders, response timeline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def run_plots(run_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    deadline = summary["deadline_s"]
    req = pd.read_parquet(run_dir / "requests.parquet",
                          columns=["replication", "arrival_s", "latency_s", "answered", "n_responders",
                                   "correct_top1", "responders"])
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for rep, g in req.groupby("replication"):
        lat = np.sort(g["latency_s"].dropna().to_numpy()) * 1e3
        if len(lat):
            ax.step(lat, np.arange(1, len(lat) + 1) / len(g), where="post", label=f"rep {rep}", lw=1)
    ax.axvline(deadline * 1e3, color="k", ls="--", lw=0.8, label="deadline")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests answered")
    ax.set_title(f"{summary['scenario']}: latency CDF", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(run_dir / "latency_cdf.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    by = req.groupby("n_responders").agg(requests=("answered", "size"), accuracy=("correct_top1", "mean"))
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.bar(by.index, 100 * by["accuracy"], color="#1f77b4")
    for x, (n, acc) in zip(by.index, zip(by["requests"], by["accuracy"])):
        ax.text(x, 100 * acc, f"{100 * acc:.1f}%\nn={n}", ha="center", va="bottom", fontsize=6)
    ax.set_xlabel("responders per request")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 110)
    ax.set_title("graceful degradation: accuracy vs responders", fontsize=10)
    fig.tight_layout()
    paths.append(run_dir / "accuracy_vs_responders.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    rep0 = req[req["replication"] == req["replication"].min()]
    devices = pd.read_parquet(run_dir / "devices.parquet")
    names = [d for d in devices[devices["replication"] == devices["replication"].min()]["device"]]
    bins = np.linspace(rep0["arrival_s"].min(), rep0["arrival_s"].max() + 1e-9, 41)
    which = np.digitize(rep0["arrival_s"], bins) - 1
    resp = rep0["responders"].astype("category")
    codes = resp.cat.codes.to_numpy()
    per_bin = np.maximum(np.bincount(which, minlength=len(bins) - 1)[: len(bins) - 1], 1)
    grid = np.zeros((len(names), len(bins) - 1))
    for i, n in enumerate(names):  # membership per distinct responder set, then gathered by code
        member = np.array([n in str(c).split(",") for c in resp.cat.categories] + [False])
        grid[i] = np.bincount(which, weights=member[codes], minlength=len(bins) - 1)[: len(bins) - 1] / per_bin
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.4))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                   extent=(bins[0], bins[-1], len(names) - 0.5, -0.5))
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("time (s)")
    ax.set_title("share of requests each device answered in time (replication 0)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    paths.append(run_dir / "availability_timeline.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
