"""``vip-sim sweep``: a grid of scenario variations into one tidy table (one row per point × replication)."""
from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import yaml

from vip_ray.core.results import atomic_dir
from vip_ray.experiment.run import RunError, run_scenario
from vip_ray.scenario import ScenarioError

SPECIAL_KEYS = {"failed_devices"}  # not scenario keys: applied to the loaded scenario


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ScenarioError(f"--grid {item!r}: expected key=v1,v2,... (e.g. workload.deadline_ms=20,50,100 "
                                f"or failed_devices=0..4)")
        if ".." in values and "," not in values:
            try:
                lo, hi = (int(x) for x in values.split(".."))
            except ValueError:
                raise ScenarioError(f"--grid {item!r}: a range is two integers, e.g. failed_devices=0..4") from None
            grid[key] = list(range(lo, hi + 1))
        else:
            grid[key] = [yaml.safe_load(v) for v in values.split(",")]
        if key == "failed_devices" and not all(isinstance(v, int) for v in grid[key]):
            raise ScenarioError(f"--grid {item!r}: failed_devices takes integers, e.g. failed_devices=0..4")
    return grid


def run_sweep(path: str | Path, grid_items: Sequence[str], *, overrides: Sequence[str] = (),
              out: str | Path | None = None, engine: str | None = None,
              log: Callable[[str], None] = print, progress_factory=None, serve_options=None) -> Path:
    grid = parse_grid(grid_items)
    out_dir = Path(out) if out else Path("results/sweeps") / f"{Path(path).stem}-{uuid.uuid4().hex[:6]}"
    if out_dir.exists():
        raise RunError(f"{out_dir} already exists; pick another --out (nothing was overwritten)")
    rows = []
    with atomic_dir(out_dir) as tmp:
        (tmp / "points").mkdir()
        keys = list(grid)
        for i, values in enumerate(itertools.product(*(grid[k] for k in keys))):
            point = dict(zip(keys, values))
            sets = [f"{k}={v}" for k, v in point.items() if k not in SPECIAL_KEYS]
            log(f"[sweep] point {i}: " + ", ".join(f"{k}={v}" for k, v in point.items()))
            run_dir = run_scenario(path, overrides=[*overrides, *sets], out=tmp / "points" / f"{i:03d}",
                                   engine=engine, failed_devices=point.get("failed_devices"), plots=False,
                                   log=log, progress_factory=progress_factory, serve_options=serve_options)
            summary = json.loads((run_dir / "summary.json").read_text())
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
        _plot(table, keys, tmp)
    return out_dir


def _plot(table: pd.DataFrame, keys: list[str], out: Path) -> None:
    """Accuracy and response rate against the first grid key (mean ± 95 % CI over replications)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    key = keys[0]
    g = table.groupby(key)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for metric, label in (("accuracy_top1", "top-1 accuracy"), ("answered", "answered"),
                          ("deadline_met", "deadline met")):
        mean = g[metric].mean()
        ci = 1.96 * g[metric].std(ddof=1).fillna(0) / np.sqrt(g[metric].count())
        ax.errorbar([str(x) for x in mean.index], 100 * mean, yerr=100 * ci, marker="o", capsize=3, label=label)
    ax.set_xlabel(key)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7)
    ax.set_title(f"sweep over {key}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / f"sweep_{key.replace('.', '_')}.png", dpi=120)
    plt.close(fig)
