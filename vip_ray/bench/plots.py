"""Plot benchmark: ``python -m vip_ray.bench.plots [--scenario FILE] [--repeat N]``.

Times the four plots of a run (latency CDF, accuracy vs responders, availability timeline,
latency breakdown), the part of ``vip-sim run`` that draws, on the run directory of
``--scenario`` (made once, without plots). Prints the first call (what ``vip-sim run`` pays: its
fonts loaded, its caches empty) and the median and spread of ``--repeat`` further calls of
``run_plots`` (wall and CPU), the cost of importing matplotlib's figure and Agg canvas in a fresh
process (paid once per ``vip-sim run``), and the load average before and after, so a reader can
tell a quiet machine from a loaded one. Goal (issue 14): the plots in ≤ 0.3 s on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 0.3
#: a fresh process: the plots module (numpy, pandas, pyarrow: loaded by vip-sim run anyway) untimed,
#: then the first figure, which imports matplotlib's figure and Agg canvas
_IMPORT_PROBE = ("import time; from vip_ray.experiment.plots import new_figure; t = time.perf_counter(); "
                 "new_figure(); print(time.perf_counter() - t)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="scenarios/smart_home.yaml")
    p.add_argument("--repeat", type=int, default=7, help="timed calls of run_plots (median reported; ≥ 5)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    if args.repeat < 5:
        p.error("--repeat: at least 5 (the median of fewer says little on a shared machine)")
    from vip_ray.experiment.plots import run_plots
    from vip_ray.experiment.run import run_scenario

    with tempfile.TemporaryDirectory(prefix="vr-benchplots") as tmp:
        out = Path(tmp) / "run"
        run_scenario(args.scenario, overrides=args.overrides, out=out, plots=False, log=lambda s: None)
        load0 = os.getloadavg()
        w, c = time.perf_counter(), time.process_time()
        run_plots(out)                                   # the first call: fonts loaded, caches filled
        first = (time.perf_counter() - w, time.process_time() - c)
        walls, cpus = [], []
        for _ in range(args.repeat):
            w, c = time.perf_counter(), time.process_time()
            paths = run_plots(out)
            cpus.append(time.process_time() - c)
            walls.append(time.perf_counter() - w)
        load1 = os.getloadavg()
        sizes = {q.name: q.stat().st_size for q in paths}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    imports = [float(subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True,
                                    check=True, env=env).stdout) for _ in range(3)]
    wall = statistics.median(walls)
    cpu = statistics.median(cpus)
    print(f"{args.scenario}: {len(sizes)} run plots, median of {args.repeat}: {wall:.3f} s wall "
          f"(min {min(walls):.3f}, max {max(walls):.3f}), {cpu:.3f} s CPU; "
          f"goal ≤ {GOAL_S} s: {'met' if max(wall, cpu) <= GOAL_S else 'NOT met'}")
    print(f"first call in the process (imports matplotlib, loads the fonts): {first[0]:.3f} s wall, "
          f"{first[1]:.3f} s CPU")
    print(f"first figure in a fresh process (matplotlib import), median of 3: {statistics.median(imports):.3f} s")
    print("files: " + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sizes.items()))
    print(f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load0)}, "
          f"after {'/'.join(f'{x:.2f}' for x in load1)}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
