"""Whole-pipeline benchmark: ``python -m vip_ray.bench.run [--requests N] [--scenario FILE]``.

Runs ``vip-sim run`` end to end (engine, aggregation over the bank, parquet streaming, summary,
plots) on one replication and prints requests/s and the peak resident memory of the process.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="scenarios/smart_home.yaml")
    p.add_argument("--requests", type=int, default=10_000_000)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    from vip_ray.experiment.run import run_scenario

    out = Path(tempfile.mkdtemp(prefix="vr-benchrun")) / "run"
    sets = [f"workload.requests={args.requests}", "seeds.replications=1", *args.overrides]
    t0 = time.perf_counter()
    try:
        run_scenario(args.scenario, overrides=sets, out=out, log=print)
        wall = time.perf_counter() - t0
        summary = json.loads((out / "summary.json").read_text())
        size = (out / "requests.parquet").stat().st_size
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.scenario}: {args.requests:,} requests in {wall:.1f} s "
          f"({args.requests / wall:,.0f} requests/s end to end; engine {summary['engine_wall_s']:.1f} s), "
          f"peak RSS {rss_mb:,.0f} MB, requests.parquet {size / 2**20:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
