"""Serve emulation benchmark: ``python -m vip_ray.bench.serve [--quick] [--out FILE]``.

On the default pool (VP V1–V5 on MNIST-5k; trained on first use), a local Ray cluster:

1. harness overhead per request — measured latency at the master minus the emulated latency
   (the last reply's emulated arrival, or the deadline) — p50 / p99 at 3, 5 and 10 emulated
   devices, all in one device-group replica; every device computes 20 ms (emulated), the links
   are fast, the deadline is 200 ms, Poisson 20 requests/s; split into real outputs late,
   transport and the master's hold timer. For comparison, 5 devices with one replica each (one
   handle call per device and request, the naive layout);
2. the highest sustained request rate with 10 devices (2 ms emulated compute, 40 ms RTT: the
   emulated devices saturate at 500 requests/s): the rate is raised until the harness no
   longer keeps up — overhead p50 > 5 ms or p95 > 25 ms, requests issued > 10 ms late at p95, or
   < 99 % of the requests answered by exactly the devices whose replies arrived in time on the
   emulated timeline (real inference included: every request runs up to 5 variants);
3. memory: 50 emulated devices (4 device-group replicas of ≤ 16 devices) answering requests — RSS
   of every replica and per emulated device — and how long Serve takes to replace a killed replica;
4. validate: ``vip-sim validate`` (time dilation ``auto``) on smart_home, cycle_stealing,
   homogeneous_office and degrading_network — the live engine's error against the simulator and
   the dilation factor X chosen for this host.

Parts 1–3 run in real time (X = 1): their overhead is the harness's own, in wall ms.
``--parts`` picks some (e.g. ``--parts overhead --devices 10``).

Writes the figures to ``results/bench/serve.json`` (with the machine's load average: timings on
a shared machine are noisy).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


VALIDATE_SCENARIOS = ("scenarios/smart_home.yaml", "scenarios/cycle_stealing.yaml",
                      "scenarios/homogeneous_office.yaml", "scenarios/degrading_network.yaml")


def scenario(n_devices: int, *, rate_hz: float = 20.0, requests: int = 300, compute_ms: float = 20.0,
             rtt_ms: float = 1.0):
    from vip_ray.scenario import parse_scenario

    lat = {f"vp_v{i}": compute_ms for i in range(1, 6)}
    devices = [{"name": "master", "role": "master", "latency_ms": lat}]
    devices += [{"name": f"w{i}", "latency_ms": lat} for i in range(1, n_devices)]
    return parse_scenario({
        "name": f"bench{n_devices}", "pool": {"name": "default"}, "devices": devices,
        "network": {"rtt_ms": rtt_ms, "bandwidth_mbps": 1000.0, "shared_medium": False},
        "workload": {"arrival": "poisson", "rate_hz": rate_hz, "requests": requests, "deadline_ms": 200.0,
                     "fallback": "local"},
        "strategy": {"name": "vp", "k": 2}, "seeds": {"base": 0, "replications": 1}})


def _q(x, q) -> float:
    return round(1e3 * float(np.quantile(x, q)), 3) if len(x) else float("nan")


def figures(cfg, replay, labels) -> dict:
    from vip_ray.serve.engine import replay_tables

    t = replay_tables(cfg, replay, labels, replication=0)
    over = t.timing["overhead_s"].to_numpy()
    full = (t.requests["n_responders"] == len(cfg.devices)).mean()
    # replies that reached the master by the deadline on the emulated timeline, vs the ones used
    j = t.jobs.merge(t.requests[["request_id", "arrival_s"]], on="request_id")
    j = j[(j["outcome"] == 0) & (j["reply_at_s"] <= j["arrival_s"] + cfg.workload.deadline_s)]
    due = j.groupby("request_id")["device"].apply(lambda x: ",".join(sorted(x)))
    used = t.requests.set_index("request_id")["responders"].astype(str).apply(lambda r: ",".join(sorted(r.split(","))))
    fidelity = float((used.reindex(due.index) == due).mean()) if len(due) else 1.0
    # where the overhead goes (emulated ms past the emulated finish, p50 / p99): the last group's
    # message left late (its real outputs were not ready), the transport to the master and its
    # aggregation, the master's hold timer firing late
    res = replay.results
    ideal = np.array([x["ideal_finish_s"] for x in res])
    sent = np.array([x.get("sent_s", np.nan) for x in res])
    ready = np.array([x.get("ready_s", np.nan) for x in res])
    finish = np.array([x["finish_s"] for x in res])
    ok = ~np.isnan(sent)
    parts = {"outputs_late": np.maximum(0.0, sent - ideal)[ok], "transport": (ready - sent)[ok],
             "hold_late": (finish - np.maximum(ready, ideal))[ok]}
    breakdown = {k: [_q(v, 0.5), _q(v, 0.99)] for k, v in parts.items()}
    return {"requests": len(over), "overhead_breakdown_p50_p99_ms": breakdown,
            "overhead_p50_ms": _q(over, 0.5), "overhead_p95_ms": _q(over, 0.95),
            "overhead_p99_ms": _q(over, 0.99),
            "overhead_mean_ms": round(1e3 * float(over.mean()), 3) if len(over) else None,
            "send_lag_p50_ms": _q(t.timing["send_lag_s"], 0.5), "send_lag_p95_ms": _q(t.timing["send_lag_s"], 0.95),
            "send_lag_p99_ms": _q(t.timing["send_lag_s"], 0.99),
            "latency_p50_ms": _q(t.requests["latency_s"].dropna(), 0.5),
            "emulated_latency_p50_ms": _q(t.timing["emulated_finish_s"] - t.timing["arrival_s"], 0.5),
            "all_devices_answered": round(float(full), 4), "answered": round(float(t.requests["answered"].mean()), 4),
            "replies_used_as_emulated": round(fidelity, 4)}


def run_app(sc, pool, images, options, log, body):
    from vip_ray.experiment.run import context
    from vip_ray.serve import build_config
    from vip_ray.serve.app import ServeEmulation
    from vip_ray.serve.engine import pool_weights
    from vip_ray.strategies import get_strategy

    strategy = get_strategy(sc.strategy.name).from_scenario(sc)
    ctx = context(sc, pool, file=sc.name, log=log)
    strategy.prepare(ctx)
    cfg = build_config(strategy.deploy(ctx, sc.seeds.base), input_shape=images.shape[1:], options=options)
    t0 = time.perf_counter()
    with ServeEmulation(cfg, pool_weights(pool, cfg), log=log) as emu:
        started = time.perf_counter() - t0
        return body(cfg, emu, started)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer requests per point (a smoke run)")
    p.add_argument("--out", default="results/bench/serve.json")
    p.add_argument("--rates", default="25,50,100,150,200,300,400", help="request rates to try for the sustained rate")
    p.add_argument("--devices", default="3,5,10", help="device counts of the overhead measurement")
    p.add_argument("--parts", default="overhead,naive,rate,memory,validate",
                   help="which measurements to run (comma-separated: overhead, naive, rate, memory, validate)")
    p.add_argument("--validate", default=",".join(VALIDATE_SCENARIOS),
                   help="scenarios of the validate part (vip-sim validate, time dilation auto)")
    p.add_argument("--validate-requests", type=int, default=300, help="requests per validated scenario")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    allowed = {"overhead", "naive", "rate", "memory", "validate"}
    if parts - allowed:
        p.error(f"--parts: unknown {sorted(parts - allowed)}; allowed: {', '.join(sorted(allowed))}")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from vip_ray.experiment.pools import ensure_default_pool
    from vip_ray.serve import ServeOptions
    from vip_ray.interrupts import start_ray
    from vip_ray.serve.app import free_port
    from vip_ray.core.results import versions
    from vip_ray.serve.engine import bank_inputs
    from vip_ray.serve.metrics import system_memory_gb

    log = print
    pool = ensure_default_pool(log=log)
    images = bank_inputs(pool)
    n_req = 100 if args.quick else 300
    out: dict = {"machine": {"cpus": os.cpu_count(), **system_memory_gb(), "load_average_start": os.getloadavg()},
                 "versions": {**versions(), "platform": platform.platform()}, "quick": args.quick}
    temp = tempfile.mkdtemp(prefix="vrb", dir="/tmp")
    if not parts - {"validate"}:
        out["validate"] = validate_all(args, log)
        return finish(out, args, log)
    start_ray(num_cpus=os.cpu_count(), include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        opts = ServeOptions()

        # 1. overhead at 3, 5, 10 devices (one device-group replica), and 5 with a replica each
        if "overhead" in parts:
            out["overhead"] = {}
            for d in (int(x) for x in args.devices.split(",")):
                def body(cfg, emu, started):
                    return {"replicas": len(cfg.groups), "deploy_s": round(started, 1),
                            **figures(cfg, emu.replicate(0, images=images), pool.labels)}
                out["overhead"][str(d)] = run_app(scenario(d, requests=n_req), pool, images, opts, log, body)
                log(f"[bench] {d} devices: {out['overhead'][str(d)]}")

        if "naive" in parts:
            def naive(cfg, emu, started):
                return {"replicas": len(cfg.groups), **figures(cfg, emu.replicate(0, images=images), pool.labels)}
            out["overhead_one_replica_per_device"] = {
                "5": run_app(scenario(5, requests=n_req), pool, images, replace(opts, devices_per_replica=1), log,
                             naive)}
            log(f"[bench] 5 devices, a replica each: {out['overhead_one_replica_per_device']['5']}")

        if "rate" in parts:
            # 2. highest sustained rate, 10 devices
            def ramp(cfg, emu, started):
                points, best = [], None
                for rate in [float(r) for r in args.rates.split(",")]:
                    n = int(rate * (3 if args.quick else 6))
                    wl = replace(cfg.workload, rate_hz=rate, n_requests=n)
                    f = {"rate_hz": rate, **figures(cfg, emu.replicate(1, images=images, workload=wl), pool.labels)}
                    f["sustained"] = bool(f["overhead_p50_ms"] <= 5 and f["overhead_p95_ms"] <= 25
                                          and f["send_lag_p95_ms"] <= 10 and f["replies_used_as_emulated"] >= 0.99)
                    points.append(f)
                    log(f"[bench] 10 devices at {rate:g}/s: {f}")
                    if not f["sustained"]:
                        break
                    best = rate
                return {"max_sustained_rate_hz": best, "points": points}
            out["rate"] = run_app(scenario(10, compute_ms=2.0, rtt_ms=40.0), pool, images, opts, log, ramp)

        if "memory" in parts:
            # 3. memory with 50 devices, and a replica's replacement time
            def memory(cfg, emu, started):
                f = figures(cfg, emu.replicate(2, images=images, workload=replace(cfg.workload, rate_hz=10.0,
                                                                                  n_requests=100)), pool.labels)
                mem = emu.health()["memory_mb"]
                groups = {g.name: mem[g.name] for g in cfg.groups}
                victim = cfg.groups[-1]
                before = emu.group_info(cfg.devices[victim.devices[0]].name)["incarnation"]
                t0 = time.perf_counter()
                emu.kill_device(cfg.devices[victim.devices[0]].name)
                while True:
                    try:
                        if emu.group_info(cfg.devices[victim.devices[0]].name)["incarnation"] != before:
                            break
                    except Exception:
                        pass
                    time.sleep(0.1)
                rss = sum(g["rss_mb"] for g in groups.values())
                pss = sum(g["pss_mb"] for g in groups.values())
                d = len(cfg.devices)
                return {"devices": d, "replicas": len(cfg.groups), "deploy_s": round(started, 1),
                        "memory_mb": {k: {kk: round(vv, 1) for kk, vv in v.items()} for k, v in mem.items()},
                        "rss_per_emulated_device_mb": round(rss / d, 1),
                        "pss_per_emulated_device_mb": round(pss / d, 1),
                        "rss_per_emulated_device_with_master_mb": round((rss + mem["master"]["rss_mb"]) / d, 1),
                        "system_memory": system_memory_gb(),
                        "killed_replica_back_s": round(time.perf_counter() - t0, 2), **f}
            out["memory_50"] = run_app(scenario(50, requests=100), pool, images, opts, log, memory)
            log(f"[bench] 50 devices: {out['memory_50']}")
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    if "validate" in parts:
        out["validate"] = validate_all(args, log)
    return finish(out, args, log)


def validate_all(args, log) -> dict:
    """``vip-sim validate`` (time dilation auto) on each scenario: the error table and the X chosen."""
    from vip_ray.experiment.validate import validate_scenario

    res = {}
    for path in args.validate.split(","):
        with tempfile.TemporaryDirectory(prefix="vrv", dir="/tmp") as tmp:
            r = validate_scenario(path, requests=args.validate_requests, out=Path(tmp) / "v", log=log)
        res[Path(path).stem] = {k: v for k, v in r.items() if k != "out"}
        log(f"[bench] validate {path}: {res[Path(path).stem]}")
    return res


def finish(out: dict, args, log) -> int:
    out["machine"]["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    _print(out)
    log(f"[bench] written to {args.out}")
    return 0


def _print(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Serve emulation: harness overhead (measured − emulated latency)")
    for c in ("devices", "replicas", "overhead p50 ms", "overhead p99 ms", "all answered", "latency p50 ms"):
        t.add_column(c, justify="right")
    rows = [(d, f) for d, f in out.get("overhead", {}).items()] + \
           [(f"{d} (naive)", f) for d, f in out.get("overhead_one_replica_per_device", {}).items()]
    for d, f in rows:
        t.add_row(d, str(f["replicas"]), f"{f['overhead_p50_ms']:.2f}", f"{f['overhead_p99_ms']:.2f}",
                  f"{100 * f['all_devices_answered']:.1f} %", f"{f['latency_p50_ms']:.1f}")
    if rows:
        Console().print(t)
    if "validate" in out:
        v = Table(title="vip-sim validate: live (time dilation auto) vs simulator")
        for c in ("scenario", "X", "p50 err", "p99 err", "mean err", "deadline met Δ", "top-1 Δ", "same responders",
                  "passed"):
            v.add_column(c, justify="right")
        for name, r in out["validate"].items():
            v.add_row(name, f"{r['time_dilation']:g}", f"{100 * r['p50_rel_err']:.1f} %",
                      f"{100 * r['p99_rel_err']:.1f} %", f"{100 * r['mean_rel_err']:.1f} %",
                      f"{r['deadline_met_diff']:+.2f}", f"{r['top1_diff']:+.2f}",
                      f"{100 * r['responders_agree']:.1f} %", "yes" if r["passed"] else "no")
        Console().print(v)
    if "rate" in out:
        print(f"max sustained rate (10 devices): {out['rate']['max_sustained_rate_hz']} requests/s")
    if "memory_50" not in out:
        return
    m = out["memory_50"]
    print(f"50 devices in {m['replicas']} replicas: {m['rss_per_emulated_device_mb']} MB RSS "
          f"({m['pss_per_emulated_device_mb']} MB PSS) per emulated device, "
          f"{m['rss_per_emulated_device_with_master_mb']} MB RSS with the master's share; killed replica back in "
          f"{m['killed_replica_back_s']} s")


if __name__ == "__main__":
    raise SystemExit(main())
