"""Simulator engine benchmark: ``python -m vip_ray.bench.sim [--quick] [--long] [--repeat N] [--out FILE]
[--throughput-only | --multi-master-only]``.

The scenario is the issue's fan-out model with the full engine feature set: Poisson arrivals
(20 req/s), a local variant on the master plus D−1 edge devices with lognormal jitter and 2 %
stragglers, on/off cycle stealing (busy 1 s / free 9 s, preempt-resume), per-device links drawn
from three profiles (Wi-Fi 1 Mbit/s 2 ms with 1 % loss; 5 Mbit/s 4 ms; 20 Mbit/s 10 ms with a
bandwidth trace 20 → 10 → 5 Mbit/s and 2 % loss), 200 ms deadline.

Prints and writes (JSON):
  0. the ``jit`` engine's one-off cost: compiling its kernels into an empty numba cache, and
     loading them from the cache (each in a fresh process);
  1. reference (idiomatic SimPy, one process per job) vs fast on the *same* spec, in one run, with
     the per-request arrays checked identical (``fast`` and ``jit``) — the ratio, at 10, 100 and
     1,000 devices;
  2. requests/s and device-jobs/s of the engines without an event loop (``loop``: per-device
     recursions; ``numpy``: all devices at once; ``jit``: the recursions compiled with numba) at
     10, 100 and 1,000 devices, whether ``jit`` meets the 10M device-jobs/s goal (issue 17), and
     the rate of ``jit``'s random draws alone (the floor under it);
  3. the cost slope: CPU time vs requests (D = 10) and vs devices (fixed R), least squares;
  (2 and 3 keep the best of ``--repeat`` runs, 3 by default, for every engine alike.)
  4. (--long) a 10M-request run streamed in chunks (``fast`` and ``jit``): time and peak RSS;
  5. multi-master (issue 17.2): one smart-city neighbourhood, reference vs loop (identical arrays,
     CPU rates), and ``scenarios/smart_city.yaml`` at ``--neighbourhoods`` × 10 devices (default
     10,000 devices, 10 simulated minutes) through ``vip-sim run`` in a fresh process: wall, CPU s,
     peak RSS, load average (``--multi-master-only`` runs this section alone).
Rates are per CPU second (``time.process_time``: robust when other jobs share the machine);
wall-clock figures are in the JSON too. ``jit`` is timed warm (its kernels loaded, section 0).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from vip_ray.core.world import MasterSpec
from vip_ray.sim import (Availability, DeviceSpec, LinkSpec, SimSpec, VariantSlot, WorkloadSpec, run,
                         run_chunks)

ARRAYS = ("arrival", "reply_at", "variant", "outcome", "bytes_down", "bytes_up")
JOBS_GOAL = 10e6     # device-jobs per CPU second, at 10, 100 and 1,000 devices (issue 17)


def bench_spec(n_devices: int, n_requests: int, seed: int = 0) -> SimSpec:
    rng = np.random.default_rng(seed)
    links = [
        LinkSpec(0.002, 1e6, loss=0.01),
        LinkSpec(0.004, 5e6),
        LinkSpec(0.010, 20e6, loss=0.02, bandwidth_trace=((n_requests / 60.0, 10e6), (n_requests / 30.0, 5e6))),
    ]
    devs = [DeviceSpec("master", (VariantSlot(0.0, 0, 0.02),), service_dist="lognormal", jitter_cv=0.2)]
    for d in range(1, n_devices):
        devs.append(DeviceSpec(
            f"edge{d}", (VariantSlot(0.0, d % 7, float(rng.uniform(0.005, 0.03))),),
            service_dist="lognormal", jitter_cv=0.3, straggler_prob=0.02, straggler_factor=4.0,
            availability=Availability("onoff", busy_mean_s=1.0, free_mean_s=9.0, mode="resume"),
            link=links[d % 3], reply_bytes=18))
    return SimSpec(tuple(devs), WorkloadSpec("poisson", rate_hz=20.0, n_requests=n_requests, deadline_s=0.2,
                                             input_bytes=3072), seed=seed)


def _timed(spec, engine, chunk=20_000):
    """(wall s, CPU s) of streaming the run; CPU time is the robust figure on a shared machine."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in run_chunks(spec, engine, chunk_requests=chunk):
        pass
    return time.perf_counter() - w0, time.process_time() - c0


def ratio(console, sizes) -> list:
    rows = []
    for D, n in sizes:
        spec = bench_spec(D, n)
        c0 = time.process_time()
        r = run(spec, "reference")
        c1 = time.process_time()
        f = run(spec, "fast")
        c2 = time.process_time()
        same = all(np.array_equal(getattr(r, k), getattr(f, k)) for k in ARRAYS)
        j = run(spec, "jit")
        c3 = time.process_time()
        same_jit = all(np.array_equal(getattr(r, k), getattr(j, k)) for k in ARRAYS)
        rows.append(dict(devices=D, requests=n, identical=same, identical_jit=same_jit, fast_engine=f.engine,
                         jit_cpu_s=c3 - c2, ratio_cpu_jit=(c1 - c0) / (c3 - c2),
                         reference_wall_s=r.wall_s, fast_wall_s=f.wall_s,
                         reference_cpu_s=c1 - c0, fast_cpu_s=c2 - c1,
                         reference_req_per_s=n / (c1 - c0), reference_jobs_per_s=n * D / (c1 - c0),
                         reference_events_per_request=r.events / n, reference_events_per_s=r.events / (c1 - c0),
                         fast_req_per_s=n / (c2 - c1), ratio_cpu=(c1 - c0) / (c2 - c1),
                         ratio_wall=r.wall_s / f.wall_s))
    t = Table(title="1. reference (SimPy, one process per job) vs fast — same spec, one run (CPU time)")
    for c in ("devices", "requests", "identical (fast, jit)", "ref req/s", "ref jobs/s", "ref events/req",
              "fast req/s", "ratio (CPU)", "ratio (wall)", "ratio jit (CPU)"):
        t.add_column(c, justify="right")
    for x in rows:
        t.add_row(str(x["devices"]), f"{x['requests']:,}", f"{x['identical']}, {x['identical_jit']}",
                  f"{x['reference_req_per_s']:,.0f}",
                  f"{x['reference_jobs_per_s']:,.0f}", f"{x['reference_events_per_request']:,.0f}",
                  f"{x['fast_req_per_s']:,.0f} ({x['fast_engine']})", f"{x['ratio_cpu']:.1f}x",
                  f"{x['ratio_wall']:.1f}x", f"{x['ratio_cpu_jit']:,.0f}x")
    console.print(t)
    return rows


def _draws_only(spec, chunk=20_000):
    """(wall s, CPU s) of drawing, chunk by chunk, every per-request random number the ``jit``
    kernel reads (its generators, its fills, its device blocks) and nothing else: the floor of any
    engine on these streams."""
    from vip_ray.sim.engines.jit import DRAW_BLOCK_VALUES, _Draws, _Generators
    w0, c0 = time.perf_counter(), time.process_time()
    D = len(spec.devices)
    rng = _Generators(spec.seed, D)
    draws = [_Draws(dev, d, rng) for d, dev in enumerate(spec.devices)]
    total = spec.workload.n_requests
    for i0 in range(0, total, chunk):
        n = min(chunk, total - i0)
        B = max(1, min(D, DRAW_BLOCK_VALUES // n))
        mult, down_u, up_u, strag_u = (np.empty((B, n)) for _ in range(4))
        for d, dr in enumerate(draws):
            r = d % B
            dr.fill(mult[r], down_u[r], up_u[r], strag_u[r])
    return time.perf_counter() - w0, time.process_time() - c0


def throughput(console, sizes, engines=("loop", "numpy", "jit", "jit draws only"), repeat=3, quick=False) -> list:
    rows = []
    for D, n in sizes:
        spec = bench_spec(D, n)
        for eng in engines:
            # best of `repeat` runs for every engine: other engineers' jobs share this machine
            timed = (lambda: _draws_only(spec)) if eng == "jit draws only" else (lambda: _timed(spec, eng))
            runs = [timed() for _ in range(repeat)]
            wall, cpu = min(runs, key=lambda r: r[1])
            rows.append(dict(engine=eng, devices=D, requests=n, wall_s=wall, cpu_s=cpu, req_per_s=n / cpu,
                             jobs_per_s=n * D / cpu, req_per_s_wall=n / wall, jobs_per_s_wall=n * D / wall,
                             runs_cpu_s=[r[1] for r in runs], runs_wall_s=[r[0] for r in runs]))
    t = Table(title=f"2. engines without an event loop: throughput, best of {repeat} (CPU time; wall in brackets)")
    for c in ("engine", "devices", "requests", "requests/s", "device-jobs/s", "jit vs numpy"):
        t.add_column(c, justify="right")
    for x in rows:
        numpy_rate = next((y["jobs_per_s"] for y in rows if y["engine"] == "numpy" and y["devices"] == x["devices"]),
                          None)
        vs = f"{x['jobs_per_s'] / numpy_rate:.1f}x" if x["engine"] == "jit" and numpy_rate else ""
        t.add_row(x["engine"], str(x["devices"]), f"{x['requests']:,}",
                  f"{x['req_per_s']:,.0f} ({x['req_per_s_wall']:,.0f})",
                  f"{x['jobs_per_s']:,.0f} ({x['jobs_per_s_wall']:,.0f})", vs)
    console.print(t)
    console.print("(jit draws only: the jit engine's per-request random numbers alone — numpy's generators, "
                  "shared by every engine — the floor under the kernel)")
    jit = [x for x in rows if x["engine"] == "jit"]
    if jit:
        met = all(x["jobs_per_s"] >= JOBS_GOAL for x in jit)
        console.print(f"jit goal (>= {JOBS_GOAL / 1e6:.0f}M device-jobs per CPU second at every size): "
                      f"{'met' if met else 'NOT met'}{' (--quick sizes: not the figures)' if quick else ''} — " +
                      ", ".join(f"{x['devices']} devices: {x['jobs_per_s'] / 1e6:.1f}M" for x in jit))
    return rows


_COMPILE_PROBE = """
import json, time
w0, c0 = time.perf_counter(), time.process_time()
from vip_ray.bench.sim import bench_spec
from vip_ray.sim import run
run(bench_spec(3, 50), "jit")
print(json.dumps(dict(wall_s=time.perf_counter() - w0, cpu_s=time.process_time() - c0)))
"""


def compile_cost(console) -> dict:
    """First call of the ``jit`` engine in a fresh process: with an empty numba cache (compiles),
    then again with the cache that run left (loads). Both include ``import numba`` and a tiny run."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="vr-numba-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold (compile)", "warm (cache)"):
            p = subprocess.run([sys.executable, "-c", _COMPILE_PROBE], env=env, capture_output=True, text=True,
                               check=True)
            out[label.split()[0]] = json.loads(p.stdout.strip().splitlines()[-1])
    console.print("0. jit first call in a fresh process (import numba + kernels + a 3-device, 50-request run): "
                  + "; ".join(f"{k}: {v['wall_s']:.1f} s wall, {v['cpu_s']:.1f} CPU s" for k, v in out.items()))
    return out


def _fit(x, y):
    A = np.vstack([x, np.ones_like(x)]).T
    (slope, icpt), *_ = np.linalg.lstsq(A, y, rcond=None)
    pred = A @ np.array([slope, icpt])
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return float(slope), float(icpt), float(r2)


def _best_cpu(spec, engine, repeat):
    return min(_timed(spec, engine)[1] for _ in range(repeat))


def slope(console, req_sizes, dev_sizes, D_fixed=10, R_fixed=2000, repeat=3) -> dict:
    out = {}
    t = Table(title=f"3. cost slope (CPU s, best of {repeat}, least squares)")
    for c in ("engine", "sweep", "points (x: CPU s)", "slope", "intercept", "R²"):
        t.add_column(c)
    xr = np.array(req_sizes, float)
    yr = np.array([_best_cpu(bench_spec(D_fixed, int(n)), "loop", repeat) for n in req_sizes])
    sr, ir, r2r = _fit(xr, yr)
    out["loop_vs_requests"] = dict(devices=D_fixed, requests=req_sizes, cpu_s=yr.tolist(),
                                   us_per_request=sr * 1e6, us_per_job=sr * 1e6 / D_fixed, intercept_s=ir, r2=r2r)
    t.add_row("loop", f"requests (D={D_fixed})", ", ".join(f"{int(a):,}: {b:.2f}" for a, b in zip(xr, yr)),
              f"{sr * 1e6:.2f} µs/request ({sr * 1e6 / D_fixed:.3f} µs/job)", f"{ir:.3f} s", f"{r2r:.4f}")
    xd = np.array(dev_sizes, float)
    for eng in ("loop", "numpy", "jit"):
        yd = np.array([_best_cpu(bench_spec(int(D), R_fixed), eng, repeat) for D in dev_sizes])
        sd, id_, r2d = _fit(xd, yd)
        out[f"{eng}_vs_devices"] = dict(requests=R_fixed, devices=dev_sizes, cpu_s=yd.tolist(),
                                        us_per_device_per_request=sd * 1e6 / R_fixed,
                                        us_per_request_at_0_devices=id_ * 1e6 / R_fixed, r2=r2d)
        t.add_row(eng, f"devices (R={R_fixed:,})", ", ".join(f"{int(a)}: {b:.3f}" for a, b in zip(xd, yd)),
                  f"{sd * 1e6 / R_fixed:.3f} µs/device/request", f"{id_ * 1e6 / R_fixed:.1f} µs/request",
                  f"{r2d:.4f}")
    console.print(t)
    return out


def long_run(console, n=10_000_000, D=10, engine="fast") -> dict:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    w0, c0 = time.perf_counter(), time.process_time()
    replied = 0
    for r in run_chunks(bench_spec(D, n), engine, chunk_requests=100_000):
        replied += int(np.isfinite(r.reply_at).sum())
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = dict(engine=engine, requests=n, devices=D, wall_s=wall, cpu_s=cpu, req_per_s=n / cpu, peak_rss_mb=rss1,
               rss_before_mb=rss0, replies=replied)
    console.print(f"4. long run ({engine}): {n:,} requests × {D} devices, {cpu:.1f} CPU s / {wall:.1f} s wall "
                  f"({n / cpu:,.0f} req/s), peak RSS {rss1:,.0f} MB (before: {rss0:,.0f} MB)")
    return out


def multi_master_spec(seed: int = 0, duration_s: float = 600.0) -> SimSpec:
    """One smart-city neighbourhood as a core world: 10 devices (4 + 2 always on, 4 with cycle
    stealing), 8 masters at 0.2 req/s reaching 6 or 7 of them, shared 100 Mbit/s medium."""
    link = LinkSpec(0.003, 100e6, loss=0.001)
    devs = []
    for d in range(10):
        av = Availability("onoff", busy_mean_s=30.0, free_mean_s=90.0, mode="resume") if d >= 6 else Availability()
        devs.append(DeviceSpec(f"dev{d}", (VariantSlot(0.0, d % 5, 0.005 + 0.004 * (d % 5)),), availability=av,
                               link=link, reply_bytes=10))
    app = WorkloadSpec("trace", times=(0.0,), deadline_s=0.1, input_bytes=784)
    user = WorkloadSpec("poisson", rate_hz=0.2, duration_s=duration_s, deadline_s=0.1, input_bytes=784)
    masters = tuple(MasterSpec(f"user{m}", user, (0, 1, 2, 3, 4, 5) if m < 4 else (0, 1, 4, 6, 7, 8, 9))
                    for m in range(8))
    return SimSpec(tuple(devs), app, shared_medium=True, seed=seed, masters=masters)


def multi_master(console, neighbourhoods: int, repeat: int = 3) -> dict:
    """5. Multi-master: reference vs loop on one neighbourhood (identical arrays, CPU rates), and
    the shipped smart city at ``neighbourhoods`` × 10 devices, 10 simulated minutes, through the
    whole product (``vip-sim run``: scenario, placement, kernel, tables, plots) in a fresh process:
    wall, CPU seconds and peak RSS of that process, the machine's load average beside them."""
    spec = multi_master_spec()
    c0 = time.process_time()
    ref = run(spec, "reference")
    c1 = time.process_time()
    loop = run(spec, "loop")
    c2 = time.process_time()
    same = all(np.array_equal(getattr(ref, k), getattr(loop, k)) for k in ARRAYS)
    jobs = int((ref.outcome != 7).sum())           # jobs sent (Outcome.NOT_SENT excluded)
    loop_cpu = min([c2 - c1] + [_timed(spec, "loop")[1] for _ in range(repeat - 1)])
    cell = {"devices": len(spec.devices), "masters": len(spec.masters), "requests": len(ref.arrival),
            "device_jobs": jobs, "identical": same, "reference_cpu_s": c1 - c0, "loop_cpu_s": loop_cpu,
            "reference_jobs_per_s": jobs / (c1 - c0), "loop_jobs_per_s": jobs / loop_cpu}
    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "smart_city.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        load0 = os.getloadavg()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "vip_ray.cli", "run", str(scenario), "--set",
                               f"masters.neighbourhoods={neighbourhoods}", "--out", f"{tmp}/run"],
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - w0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        load1 = os.getloadavg()
        if proc.returncode:
            raise SystemExit(f"smart_city run failed: {proc.stderr.strip()[-2000:]}")
        summary = json.loads(Path(f"{tmp}/run/summary.json").read_text())
    city = {"neighbourhoods": neighbourhoods, "devices": 10 * neighbourhoods, "users": 8 * neighbourhoods,
            "simulated_s": 600.0, "requests": summary["metrics"]["requests"]["mean"], "process_wall_s": wall,
            "process_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "run_wall_s": summary["wall_s"], "run_cpu_s": summary["cpu_s"], "engine_wall_s": summary["engine_wall_s"],
            "peak_rss_mb": after.ru_maxrss / 1024, "loadavg_before": load0, "loadavg_after": load1,
            "goal_wall_s": 20.0, "pureedgesim_wall_s": 72.0, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    t = Table(title="5. multi-master: one neighbourhood (reference vs loop), and the smart city")
    for c in ("case", "devices", "requests", "identical", "CPU s", "wall s", "jobs/s or peak RSS"):
        t.add_column(c, justify="right")
    t.add_row("neighbourhood, reference", str(cell["devices"]), f"{cell['requests']:,}", str(same),
              f"{cell['reference_cpu_s']:.3f}", "", f"{cell['reference_jobs_per_s']:,.0f}")
    t.add_row("neighbourhood, loop", str(cell["devices"]), f"{cell['requests']:,}", str(same),
              f"{cell['loop_cpu_s']:.3f}", "", f"{cell['loop_jobs_per_s']:,.0f}")
    t.add_row(f"smart_city x{neighbourhoods} (process)", f"{city['devices']:,}", f"{city['requests']:,.0f}", "",
              f"{city['process_cpu_s']:.1f}", f"{wall:.1f} (goal 20, PureEdgeSim 72)",
              f"{city['peak_rss_mb']:,.0f} MB")
    t.add_row("  of which the run (summary)", "", "", "", f"{city['run_cpu_s']:.1f}", f"{city['run_wall_s']:.1f}",
              f"load {load0[0]:.1f} -> {load1[0]:.1f}")
    Console(width=max(console.width, 150)).print(t)   # readable in a pipe too
    return {"neighbourhood": cell, "city": city}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke check, not the figures)")
    p.add_argument("--long", action="store_true", help="also stream a 10M-request run and report peak RSS")
    p.add_argument("--repeat", type=int, default=3,
                   help="sections 2 and 3: runs per engine and size (the best is kept)")
    p.add_argument("--out", default="results/bench/sim.json")
    p.add_argument("--neighbourhoods", type=int, default=1000,
                   help="section 5: smart_city neighbourhoods of 10 devices (default 1000: 10,000 devices)")
    p.add_argument("--multi-master-only", action="store_true", help="run section 5 only")
    p.add_argument("--throughput-only", action="store_true",
                   help="run section 2 only (to compare two checkouts in turns: a change's cost on the engines)")
    args = p.parse_args(argv)
    if args.repeat < 1:
        print(f"--repeat: must be an int >= 1, got {args.repeat}", file=sys.stderr)
        return 2
    if args.neighbourhoods < 1:
        print(f"--neighbourhoods: must be an int >= 1, got {args.neighbourhoods}", file=sys.stderr)
        return 2
    console = Console()
    q = args.quick
    out = {}
    if args.multi_master_only:
        out["multi_master"] = multi_master(console, 10 if q else args.neighbourhoods, repeat=args.repeat)
        return _write(console, args.out, out)
    if args.throughput_only:
        _timed(bench_spec(3, 100), "jit")   # the jit kernels loaded (or compiled) before timing
        out["throughput"] = throughput(console, [(10, 20_000 if q else 100_000), (100, 2_000 if q else 10_000),
                                                 (1000, 500 if q else 5_000)], repeat=args.repeat, quick=q)
        return _write(console, args.out, out)
    out["jit_compile"] = compile_cost(console)
    _timed(bench_spec(3, 100), "jit")   # load the jit kernels here: their one-off cost is section 0
    out["ratio"] = ratio(console, [(10, 300 if q else 3000), (100, 30 if q else 300), (1000, 10 if q else 100)])
    out["throughput"] = throughput(console, [(10, 20_000 if q else 100_000), (100, 2_000 if q else 10_000),
                                             (1000, 500 if q else 5_000)], repeat=args.repeat, quick=q)
    out["slope"] = slope(console, [5_000, 10_000, 20_000] if q else [25_000, 50_000, 100_000, 200_000],
                         [10, 30, 100] if q else [10, 100, 300, 1000], R_fixed=300 if q else 2000,
                         repeat=args.repeat)
    if args.long:
        out["long"] = long_run(console)
        out["long_jit"] = long_run(console, engine="jit")
    out["multi_master"] = multi_master(console, 10 if q else args.neighbourhoods, repeat=args.repeat)
    return _write(console, args.out, out)


def _write(console, path, out) -> int:
    import platform

    import numba
    import simpy
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"results": out, "cpus": os.cpu_count(), "python": platform.python_version(),
                                          "simpy": simpy.__version__, "numpy": np.__version__,
                                          "numba": numba.__version__, "date": time.strftime("%Y-%m-%d"),
                                          "loadavg_1m": os.getloadavg()[0]}, indent=2))
    console.print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
