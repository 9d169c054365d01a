"""Distributed studies benchmark: ``python -m vip_ray.bench.sweep [--requests R] [--workers N] [--out FILE]``.

A 32-point sweep of the smart home (``scenarios/smart_home.yaml``: 8 deadlines × 0..3 failed
devices, one replication of R requests each, on the SimPy ``reference`` kernel so that a point is
about a CPU-second of simulation) run twice:

1. ``--workers 1``: one point after another in this process (today's path);
2. ``--workers N`` (default 2): every point a Ray task on a local cluster of N CPUs started here
   beforehand (its start-up is timed apart; no dashboard, which would take a share of 2 cores),
   first on fresh workers (*cold*: each worker imports vip_ray on its first task), then again
   (*warm*).

Prints and writes (JSON, default ``results/bench/sweep.json``): wall and CPU seconds of each run,
the speedup (goal ≥ 1.8× with 2 workers on a quiet 2-core machine, issue 17), the per-task
overhead ``(N × wall_N − wall_1) / tasks`` (capacity not spent simulating, per task), the mean
wall and CPU time a task spends beyond the same point in-process, the cores each run got (its
points' CPU seconds over its wall time: on a machine other jobs load, fewer than asked for),
whether every table (``sweep.parquet`` and each point's ``requests``/``devices``) is identical, and
the machine's load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from vip_ray.core.cluster import join_or_start, local_cpus, stop
from vip_ray.experiment.study import StudyOptions
from vip_ray.experiment.sweep import run_sweep

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "smart_home.yaml"
GRID = ["workload.deadline_ms=20,25,30,35,40,50,60,80", "failed_devices=0..3"]  # 8 × 4 = 32 points
SPEEDUP_GOAL = 1.8


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    return {str(p.relative_to(folder)): pd.read_parquet(p) for p in sorted(folder.rglob("*.parquet"))}


def identical(a: Path, b: Path) -> bool:
    """Every parquet table of the two study folders equal, value for value and dtype for dtype."""
    ta, tb = _tables(a), _tables(b)
    if sorted(ta) != sorted(tb):
        return False
    try:
        for name in ta:
            pd.testing.assert_frame_equal(ta[name], tb[name], check_exact=True)
    except AssertionError:
        return False
    return True


def point_times(folder: Path, key: str) -> list[float]:
    """Each point's ``wall_s`` or ``cpu_s`` (in-process: the point's; on Ray: its tasks', summed)."""
    return [json.loads(p.read_text())[key] for p in sorted((folder / "points").glob("*/summary.json"))]


def timed_sweep(out: Path, overrides: list[str], workers: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    run_sweep(str(SCENARIO), GRID, overrides=overrides, out=out, engine="reference", log=lambda s: None,
              study=StudyOptions(workers=workers))
    return {"wall_s": round(time.perf_counter() - t0, 3), "driver_cpu_s": round(time.process_time() - c0, 3)}


def main(argv: list[str] | None = None) -> dict:
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(prog="python -m vip_ray.bench.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=4000, help="requests per point (default 4000)")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers of the parallel runs (default 2)")
    ap.add_argument("--out", default="results/bench/sweep.json", help="JSON file written")
    args = ap.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)  # a pipe or a log keeps the table whole
    overrides = [f"workload.requests={args.requests}", "seeds.replications=1"]
    load_before = os.getloadavg()
    result: dict = {"points": 32, "tasks": 32, "requests_per_point": args.requests, "engine": "reference",
                    "workers": args.workers, "cpus": local_cpus(), "load_before": [round(x, 2) for x in load_before]}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        console.print(f"[bench.sweep] 32 points × {args.requests} requests, --workers 1 (in this process) …")
        seq = timed_sweep(tmp / "seq", overrides, 1)
        t0 = time.perf_counter()
        started, _ = join_or_start(None, num_cpus=args.workers, dashboard=False,
                                   temp_dir=tempfile.mkdtemp(prefix="vrb", dir="/tmp"))
        result["ray_start_s"] = round(time.perf_counter() - t0, 2)
        try:
            console.print(f"[bench.sweep] --workers {args.workers} on Ray, cold then warm …")
            cold = timed_sweep(tmp / "cold", overrides, args.workers)
            warm = timed_sweep(tmp / "warm", overrides, args.workers)
        finally:
            if started:
                stop()
        tasks = 32
        in_process, in_process_cpu = point_times(tmp / "seq", "wall_s"), point_times(tmp / "seq", "cpu_s")
        seq["cores_used"] = round(sum(in_process_cpu) / seq["wall_s"], 3)
        for name, run in (("cold", cold), ("warm", warm)):
            run["speedup"] = round(seq["wall_s"] / run["wall_s"], 3)
            run["overhead_per_task_s"] = round((args.workers * run["wall_s"] - seq["wall_s"]) / tasks, 4)
            task_walls, task_cpu = point_times(tmp / name, "wall_s"), point_times(tmp / name, "cpu_s")
            run["task_extra_s_mean"] = round(sum(t - s for t, s in zip(task_walls, in_process)) / tasks, 4)
            run["task_extra_cpu_s_mean"] = round(sum(t - s for t, s in zip(task_cpu, in_process_cpu)) / tasks, 4)
            run["cores_used"] = round(sum(task_cpu) / run["wall_s"], 3)  # what the machine gave the tasks
            run["identical_tables"] = identical(tmp / "seq", tmp / name)
        result.update(sequential=seq, cold=cold, warm=warm,
                      point_wall_s_mean=round(sum(in_process) / len(in_process), 4),
                      point_cpu_s_mean=round(sum(in_process_cpu) / len(in_process_cpu), 4))
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["goal"] = {"speedup": SPEEDUP_GOAL, "met_warm": result["warm"]["speedup"] >= SPEEDUP_GOAL}
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    t = Table(title=f"32-point sweep, --workers 1 vs --workers {args.workers} (load before "
                    f"{result['load_before'][0]}, after {result['load_after'][0]} on {result['cpus']} CPUs)")
    for col in ("run", "wall s", "driver CPU s", "cores used", "speedup", "overhead / task s",
                "task − in-process s (CPU s)", "tables identical"):
        t.add_column(col, justify="right")
    t.add_row("--workers 1", f"{seq['wall_s']:.2f}", f"{seq['driver_cpu_s']:.2f}", f"{seq['cores_used']:.2f}", "1.00",
              "—", "—", "—")
    for name in ("cold", "warm"):
        r = result[name]
        t.add_row(f"--workers {args.workers} ({name})", f"{r['wall_s']:.2f}", f"{r['driver_cpu_s']:.2f}",
                  f"{r['cores_used']:.2f}", f"{r['speedup']:.2f}", f"{r['overhead_per_task_s']:.3f}",
                  f"{r['task_extra_s_mean']:.3f} ({r['task_extra_cpu_s_mean']:.3f})",
                  "yes" if r["identical_tables"] else "NO")
    console.print(t)
    console.print(f"Ray start-up (local, {args.workers} CPUs, no dashboard): {result['ray_start_s']} s; "
                  f"mean point in-process: {result['point_wall_s_mean']} s ({result['point_cpu_s_mean']} CPU s); goal ≥ {SPEEDUP_GOAL}× "
                  f"{'met' if result['goal']['met_warm'] else 'NOT met'} (warm)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
