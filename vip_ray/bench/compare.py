"""Strategy comparison benchmark: ``python -m vip_ray.bench.compare [--requests N] [--strategies ...]``.

Runs ``vip-sim compare`` on a scenario (default ``scenarios/smart_home.yaml``: five strategies,
failed devices 0..n-1 plus cycle stealing, one replication of N requests per point), prints the
wall time, the time per strategy and the table; writes ``results/bench/compare.json``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="scenarios/smart_home.yaml")
    p.add_argument("--strategies", default="single,mp,cp,vp,vip")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--keep", default=None, help="keep the compare directory here")
    args = p.parse_args(argv)
    import pandas as pd

    from vip_ray.experiment.compare import mean_table, run_compare
    from vip_ray.experiment.run import context, open_pool
    from vip_ray.scenario import load_scenario
    from vip_ray.strategies import get_strategy, with_strategy

    strategies = args.strategies.split(",")
    sets = [f"workload.requests={args.requests}", "seeds.replications=1"]
    base = load_scenario(args.scenario, sets)
    pool = open_pool(base, print)
    for s in strategies:  # pools a strategy builds on first use (default-cp) are not part of the timing
        sc = with_strategy(base, s)
        get_strategy(s).from_scenario(sc).prepare(context(sc, pool, file=args.scenario, log=print))
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vr-benchcmp")) / "cmp"
    t0 = time.perf_counter()
    try:
        run_compare(args.scenario, strategies, overrides=sets, out=out, log=lambda s: None)
        wall = time.perf_counter() - t0
        table = pd.read_parquet(out / "compare.parquet")
        points = {s: json.loads((out / "points" / s / c / "summary.json").read_text())["engine_wall_s"]
                  for s in strategies for c in ["failed=0"]}
    finally:
        if not args.keep:
            shutil.rmtree(out.parent, ignore_errors=True)
    n_points = len(table)
    means = mean_table(table)
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.max_rows", 100):
        print(means[["answered", "deadline_met", "accuracy_top1", "latency_p50_ms", "latency_p99_ms",
                     "bytes_per_request", "macs_per_device"]].round(4).to_string())
    print(f"{args.scenario}: {len(strategies)} strategies x {n_points // len(strategies)} conditions x "
          f"{args.requests:,} requests = {n_points * args.requests:,} simulated requests in {wall:.1f} s "
          f"(engine s at failed=0: {', '.join(f'{k} {v:.2f}' for k, v in points.items())})")
    Path("results/bench").mkdir(parents=True, exist_ok=True)
    Path("results/bench/compare.json").write_text(json.dumps(
        {"scenario": args.scenario, "strategies": strategies, "requests_per_point": args.requests,
         "points": n_points, "wall_s": round(wall, 2), "engine_s_failed0": points,
         "table": means.reset_index().to_dict(orient="records")}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
