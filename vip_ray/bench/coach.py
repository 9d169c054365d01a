"""COACH benchmark: ``python -m vip_ray.bench.coach [--quick] [--out results/bench/coach.json]``.

1. **Search cost** — the offline search (Algorithm 1) against exhaustive search on ResNet-101,
   GoogLeNet (4-branch inception blocks: where O(c^n) bites) and VGG16, profiled at 224 px on a
   Jetson NX + cloud GPU: partitions evaluated, bounded away, accuracy probes, seconds, and whether
   both find the same optimum. Bits come from a seeded monotone eq. 1 rule here so that exhaustive
   search is affordable; with the trained model's real oracle (part 2) every probe is a forward
   pass, and the probe count is what the time follows.
2. **Table I** — average latency (ms) per policy (NS, DADS, SPINN, JPS, COACH) and end device (NX,
   TX2) for ResNet101 and VGG16, over uplink bandwidths (default 5, 10, 20, 50, 100 Mbps), from the
   registered strategies on ``scenarios/end_cloud_nx.yaml`` / ``end_cloud_tx2.yaml``; plus
   throughput, accuracy and bytes, and COACH's ratios over NS and JPS.
3. **Table II** — COACH with context-aware acceleration at low / medium / high temporal
   correlation and without it (NoAdjust): exit ratio, latency (ms), transmission (KB per task).
4. **Fig. 5** — throughput (tasks/s) of every policy in each phase of the bandwidth drops
   20 → 10 → 5 and 100 → 50 → 20 Mbps (``scenarios/end_cloud_drops.yaml``, saturating frames), and
   each policy's static throughput at the same bandwidths. ``--fig5-models`` runs it on several
   independently trained pools (mean, standard deviation, min..max over them and how many fell
   below local execution: ``coach_fig5.csv``); ``--readings initial,lowest`` adds COACH with its
   offline plan made for the lowest bandwidth of the trace (``plan_bandwidth``, README Fig. 5).

Accuracy is the trained pool members' (MNIST-5k at 32 px; costs at 224 px), see README.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vip_ray.coach import PLAN_READINGS

POLICIES = ("neurosurgeon", "dads", "spinn", "jps", "coach")
SHORT = {"neurosurgeon": "NS", "dads": "DADS", "spinn": "SPINN", "jps": "JPS", "coach": "COACH"}
TEACHER = "resnet50_slices-homogeneous-crops-mnist5k:resnet50_teacher"
END_CLOUD_POOL = "end_cloud-mnist5k"            # ResNet101 + VGG16 (python -m vip_ray.tune family=end_cloud ...)


def default_models() -> list[str]:
    """``pool:member`` specs: the VIP teacher (ResNet50), plus ResNet101 and VGG16 when the
    end–cloud pool is in the store."""
    from vip_ray.pool import pools_root

    out = [TEACHER]
    if (pools_root() / END_CLOUD_POOL).is_dir():
        out += [f"{END_CLOUD_POOL}:resnet101", f"{END_CLOUD_POOL}:vgg16"]
    return out


def _model_sets(spec: str) -> tuple[str, list[str]]:
    """(member, overrides) of a ``pool:member`` spec: that pool, no training, every policy on it."""
    pool, _, member = spec.rpartition(":")
    sets = [f"strategy.options.{p}.model={member}" for p in POLICIES]
    if pool:
        sets += [f"pool.name={pool}", "pool.build=null"]
    return member, sets
DEVICES = {"NX": "scenarios/end_cloud_nx.yaml", "TX2": "scenarios/end_cloud_tx2.yaml"}


EXTRA: list[str] = []   # --set overrides for every run


def _run(path: str, strategy: str, sets: list[str], log) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """One replication of a registered strategy on a scenario (the code path of vip-sim run)."""
    from vip_ray.core.engine import make_engine
    from vip_ray.experiment.run import context, open_pool
    from vip_ray.scenario import load_scenario
    from vip_ray.strategies import get_strategy, with_strategy

    sc = with_strategy(load_scenario(path, [*sets, *EXTRA]), strategy)
    pool = open_pool(sc, log)
    strat = get_strategy(strategy).from_scenario(sc, path)
    ctx = context(sc, pool, file=path, log=log)
    t0 = time.perf_counter()
    strat.prepare(ctx)
    plan_s = time.perf_counter() - t0
    rep = make_engine(sc.sim_engine).replicate(strat.deploy(ctx, sc.seeds.base), replication=0, chunk_requests=10**9)
    table = pd.concat(list(rep), ignore_index=True)
    return table, rep.devices, {**rep.meta, "plan_s": plan_s}


def _figures(table: pd.DataFrame, meta: dict) -> dict[str, float]:
    lat = table["latency_s"].to_numpy()
    return {"latency_ms": 1e3 * float(np.mean(lat)), "latency_p99_ms": 1e3 * float(np.quantile(lat, 0.99)),
            "throughput_per_s": float(meta["throughput_per_s"]), "accuracy": float(table["correct_top1"].mean()),
            "exit_ratio": float(table["early_exit"].mean()), "kb_per_task": float(table["bytes_up"].mean()) / 1e3,
            "bits_mean_sent": float(table.loc[table["bytes_up"] > 0, "bits"].mean()) if (table["bytes_up"] > 0).any()
            else 0.0, "partition": str(table["partition"].mode().iloc[0]), "plan_s": meta["plan_s"]}


def search_cost(log) -> list[dict[str, Any]]:
    from vip_ray.coach.blocks import Chain
    from vip_ray.coach.offline import CostModel, coach_search, exhaustive_search
    from vip_ray.coach.profile import profile_torchvision
    from vip_ray.scenario import load_scenario

    sc = load_scenario(DEVICES["NX"])
    end, cloud = sc.device("nx"), sc.device("cloud")
    rows = []
    for arch in ("resnet101", "googlenet", "vgg16"):
        t0 = time.perf_counter()
        prof = profile_torchvision(arch)
        chain = Chain(prof)
        profile_s = time.perf_counter() - t0
        te, tc = prof.layer_times(end, family="baseline"), prof.layer_times(cloud, family="baseline")
        for mbps in (5, 20, 100):
            cost = CostModel(chain, te, tc, mbps * 1e6)
            rule = _monotone_rule(arch)
            ours = coach_search(cost, rule)
            ref = exhaustive_search(cost, rule)
            full = len(chain.all_cuts()) * 15
            rows.append({"model": arch, "mbps": mbps, "layers": prof.n, "virtual_blocks": sum(b.virtual for b in chain.blocks),
                         "profile_s": round(profile_s, 3),
                         "coach_evaluated": ours.evaluated, "coach_pruned": ours.pruned, "coach_probes": ours.probes,
                         "coach_s": round(ours.seconds, 4), "exhaustive_partitions": ref.evaluated,
                         "exhaustive_probes_bisect": ref.probes, "exhaustive_probes_all_bits": full,
                         "exhaustive_s": round(ref.seconds, 4),
                         "same_optimum": bool(math.isclose(ours.best.objective, ref.best.objective, rel_tol=1e-9)),
                         "objective_gap": ours.best.objective / ref.best.objective - 1.0,
                         "partition": ours.best.cut.where, "bits": ours.best.plan.bits_label(ours.best.bits)})
            log(f"  search {arch:9s} {mbps:3d} Mbps: COACH {ours.evaluated} evaluated + {ours.pruned} bounded, "
                f"{ours.probes} probes, {ours.seconds:.2f} s | exhaustive {ref.evaluated} partitions, "
                f"{ref.probes} probes ({full} with every width), {ref.seconds:.2f} s | same optimum: {rows[-1]['same_optimum']} "
                f"(gap {100 * rows[-1]['objective_gap']:.1f} %)")
    return rows


def _monotone_rule(seed_text: str):
    """Eq. 1 stand-in for architectures without trained weights: each partition accepts from a
    seeded minimum width on (deeper tensors tend to need fewer bits, as in COACH Fig. 1)."""
    cache: dict[bytes, int] = {}
    base = int.from_bytes(seed_text.encode()[:4], "little")

    def accept(cut, bits):
        if cut.key not in cache:
            r = np.random.default_rng([base, int.from_bytes(cut.key[-8:], "little") % 2**32])
            depth = cut.n_end / max(1, len(cut.end) - 1)
            cache[cut.key] = int(np.clip(round(8 - 4 * depth + r.normal(0, 1.5)), 2, 17))
        return bits >= cache[cut.key]
    return accept


def table_one(models, bandwidths, requests, log) -> pd.DataFrame:
    rows = []
    for spec in models:
        model, msets = _model_sets(spec)
        for dev, path in DEVICES.items():
            for mbps in bandwidths:
                # 10 fps: every policy but the slowest local ones keeps up, so latency is the pipeline's,
                # not a queue that grows with the run (capacity: the Fig. 5 part)
                sets = [f"devices.1.link.bandwidth_mbps={mbps}", f"workload.requests={requests}", "seeds.replications=1",
                        "workload.fps=10", *msets]
                for p in POLICIES:
                    table, _, meta = _run(path, p, sets, log)
                    f = _figures(table, meta)
                    off = meta.get("end_cloud", {})
                    if p == "coach":    # the offline search with the real oracle (probes are forward passes)
                        f.update({f"search_{k}": off["offline"][k] for k in ("evaluated", "pruned", "probes", "seconds", "space")},
                                 search_forward_passes=off.get("offline_forward_passes"),
                                 search_forward_s=off.get("offline_forward_s"), offline_bits=off.get("bits"),
                                 s_ext=off.get("online", {}).get("s_ext"))
                    rows.append({"model": model, "device": dev, "mbps": mbps, "policy": SHORT[p], **f})
                    log(f"  {model:9s} {dev:3s} {mbps:3d} Mbps {SHORT[p]:5s}: latency {f['latency_ms']:7.2f} ms, "
                        f"throughput {f['throughput_per_s']:5.1f}/s, accuracy {f['accuracy']:.3f}, exit {f['exit_ratio']:.2f}, "
                        f"{f['kb_per_task']:.1f} KB, {f['partition']}")
    return pd.DataFrame(rows)


def table_two(models, requests, mbps, log) -> pd.DataFrame:
    rows = []
    for spec in models:
        model, msets = _model_sets(spec)
        base = [f"devices.1.link.bandwidth_mbps={mbps}", f"workload.requests={requests}", "seeds.replications=1", *msets]
        levels = (("NoAdjust", ["strategy.options.coach.online=false"]), ("Low", []),
                  ("Medium", ["workload.frames.correlation=medium"]), ("High", ["workload.frames.correlation=high"]))
        # eq. 7 as a running mean (COACH's), and with m_j capped at 2: centres that follow the context
        for cache, cset in (("running mean", []), ("max_count=2", ["strategy.options.coach.max_count=2"])):
            for level, extra in levels:
                if level == "NoAdjust" and cset:
                    continue
                table, _, meta = _run(DEVICES["NX"], "coach", [*base, *cset, *extra], log)
                f = _figures(table, meta)
                rows.append({"model": model, "cache": cache, "level": level, **f})
                log(f"  {model:9s} {cache:12s} {level:8s}: exit {100 * f['exit_ratio']:5.1f} %, latency "
                    f"{f['latency_ms']:6.2f} ms, {f['kb_per_task']:6.1f} KB, accuracy {f['accuracy']:.3f}")
    return pd.DataFrame(rows)


READINGS = PLAN_READINGS   # COACH's plan_bandwidth (strategy.options.coach.plan_bandwidth)


def _variants(readings: tuple[str, ...], policies=POLICIES) -> list[tuple[str, str, list[str]]]:
    """(strategy, label, extra sets) of Fig. 5: every policy, COACH once per reading of the
    bandwidth its offline plan is made for (``COACH`` = initial, ``COACH-lowest``, ...)."""
    out = []
    for p in policies:
        if p != "coach":
            out.append((p, SHORT[p], []))
            continue
        for r in readings:
            out.append((p, SHORT[p] if r == "initial" else f"{SHORT[p]}-{r}",
                        [f"strategy.options.coach.plan_bandwidth={r}"]))
    return out


def drops(spec, log, duration_s: float, readings: tuple[str, ...] = ("initial",),
          steps_list=((20, 10, 5), (100, 50, 20)), policies=POLICIES) -> pd.DataFrame:
    rows = []
    model, msets = _model_sets(spec)
    for steps in steps_list:          # COACH Fig. 5(a) and 5(b)
        third = duration_s / 3
        sets = [f"devices.1.link.bandwidth_trace=[[0, {steps[0]}], [{third}, {steps[1]}], [{2 * third}, {steps[2]}]]",
                f"workload.duration_s={duration_s}", *msets]
        for p, label, extra in _variants(readings, policies):
            table, _, meta = _run("scenarios/end_cloud_drops.yaml", p, [*sets, *extra], log)
            fin = table["finish_s"].to_numpy()
            for k, mbps in enumerate(steps):
                a, b = k * third, (k + 1) * third
                dyn = float(((fin >= a) & (fin < b)).sum() / third)
                # static: a run at this bandwidth alone (under "lowest" the plan is then made for it)
                stat_table, _, stat_meta = _run("scenarios/end_cloud_drops.yaml", p, [
                    *sets[1:], "devices.1.link.bandwidth_trace=null", f"devices.1.link.bandwidth_mbps={mbps}",
                    f"workload.duration_s={third}", *extra], log)
                rows.append({"pool": spec, "model": model,
                             "drop": "-".join(map(str, steps)), "phase_mbps": mbps, "policy": label,
                             "partition": str(table["partition"].mode().iloc[0]),
                             "dynamic_throughput": dyn, "static_throughput": float(stat_meta["throughput_per_s"]),
                             "bits_mean_sent": float(table.loc[(fin >= a) & (fin < b) & (table["bytes_up"] > 0), "bits"].mean())
                             if ((fin >= a) & (fin < b) & (table["bytes_up"] > 0)).any() else 0.0})
                log(f"  {spec} drop {steps} phase {mbps:3d} Mbps {label:12s}: {dyn:6.1f} tasks/s "
                    f"(static {rows[-1]['static_throughput']:6.1f})")
    return pd.DataFrame(rows)


def _ratios(t1: pd.DataFrame) -> dict[str, Any]:
    out = {}
    piv = t1.groupby(["model", "device", "policy"])[["latency_ms", "throughput_per_s"]].mean()
    for (model, dev), g in piv.groupby(level=[0, 1]):
        g = g.droplevel([0, 1])
        for base in ("NS", "JPS"):
            out[f"{model}/{dev}/latency_reduction_vs_{base}"] = 1 - g.loc["COACH", "latency_ms"] / g.loc[base, "latency_ms"]
            out[f"{model}/{dev}/throughput_x_vs_{base}"] = g.loc["COACH", "throughput_per_s"] / g.loc[base, "throughput_per_s"]
    return out


def _fig5_summary(f5: pd.DataFrame) -> pd.DataFrame:
    """Per drop, phase and policy over the pools: mean, sample standard deviation, min and max of
    the dynamic throughput (tasks/s), the static mean, and how many pools fell below local
    execution (NS's throughput on the same pool and phase: the three fp32 baselines run locally
    on these drops, README Fig. 5)."""
    local = f5[f5["policy"] == "NS"].set_index(["pool", "drop", "phase_mbps"])["dynamic_throughput"]
    f = f5.join(local.rename("ns"), on=["pool", "drop", "phase_mbps"])
    f["below_ns"] = f["dynamic_throughput"] < f["ns"]
    g = f.groupby(["drop", "phase_mbps", "policy"], sort=False)
    out = g["dynamic_throughput"].agg(dynamic_mean="mean", dynamic_std="std", dynamic_min="min", dynamic_max="max",
                                      pools="count")
    out["static_mean"] = g["static_throughput"].mean()
    out["pools_below_ns"] = g["below_ns"].sum().astype(int)
    return out.reset_index()


def _plot(fig5: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # several pools: bars are the mean over pools, whiskers their min..max
    fig5 = _fig5_summary(fig5).rename(columns={"dynamic_mean": "dynamic_throughput",
                                               "static_mean": "static_throughput"})
    drops_ = list(dict.fromkeys(fig5["drop"]))
    fig, axes = plt.subplots(1, len(drops_), figsize=(6 * len(drops_), 4))
    for ax, d in zip(np.atleast_1d(axes), drops_):
        f = fig5[fig5["drop"] == d]
        phases = list(dict.fromkeys(f["phase_mbps"]))
        pols = list(dict.fromkeys(f["policy"]))
        w = 0.8 / len(pols)
        for j, p in enumerate(pols):
            g = f[f["policy"] == p].set_index("phase_mbps").reindex(phases)
            x = np.arange(len(phases)) + j * w
            err = None if (g["pools"] < 2).all() else np.vstack([g["dynamic_throughput"] - g["dynamic_min"],
                                                                    g["dynamic_max"] - g["dynamic_throughput"]])
            ax.bar(x, g["dynamic_throughput"], width=w, label=p, yerr=err, capsize=2)
            ax.scatter(x, g["static_throughput"], color="k", marker="_", s=80)
        ax.set_xticks(np.arange(len(phases)) + 0.4 - w / 2, [f"{m} Mbps" for m in phases])
        ax.set_ylabel("throughput (tasks/s); — static")
        ax.set_title(f"bandwidth {d} Mbps")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/bench/coach.json")
    p.add_argument("--quick", action="store_true", help="fewer bandwidths, frames and a shorter drop run")
    p.add_argument("--models", default=None, help="pool:member specs, comma-separated (default: the VIP teacher, "
                   f"plus ResNet101 and VGG16 of {END_CLOUD_POOL} when it is in the store)")
    p.add_argument("--parts", default="search,table1,table2,fig5")
    p.add_argument("--fig5-models", default=None, help="pool:member specs for Fig. 5, comma-separated; with "
                   "several (independently trained pools) the table gives mean, spread and min..max over them "
                   "(default: the first of --models)")
    p.add_argument("--readings", default="initial", help="COACH's plan_bandwidth readings for Fig. 5, comma-"
                   f"separated, of {', '.join(READINGS)} (default: initial)")
    p.add_argument("--policies", default=",".join(POLICIES), help="Fig. 5's policies, comma-separated, of "
                   f"{', '.join(POLICIES)} (NS is always run: the local reference)")
    p.add_argument("--drops", default="20-10-5,100-50-20", help="Fig. 5's bandwidth drops (Mbps), comma-separated")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="scenario override for every run (e.g. pool.name=... to use another pool)")
    args = p.parse_args(argv)
    EXTRA[:] = args.overrides
    import torch

    torch.set_num_threads(2)
    log = print
    models = [m for m in args.models.split(",") if m] if args.models else default_models()
    parts = set(args.parts.split(","))
    readings = tuple(r for r in args.readings.split(",") if r)
    bad = [r for r in readings if r not in READINGS]
    if bad or not readings:
        p.error(f"--readings: {args.readings!r}; allowed: {', '.join(READINGS)} (comma-separated)")
    policies = tuple(dict.fromkeys(["neurosurgeon", *(x for x in args.policies.split(",") if x)]))
    if set(policies) - set(POLICIES):
        p.error(f"--policies: {args.policies!r}; allowed: {', '.join(POLICIES)} (comma-separated)")
    try:
        steps_list = tuple(tuple(int(x) for x in d.split("-")) for d in args.drops.split(",") if d)
    except ValueError:
        steps_list = ()
    if not steps_list or not all(len(t) == 3 and min(t) > 0 for t in steps_list):
        p.error(f"--drops: {args.drops!r}; allowed: comma-separated A-B-C (three bandwidths in Mbps, > 0)")
    bandwidths = (5, 20, 100) if args.quick else (5, 10, 20, 50, 100)
    requests = 200 if args.quick else 400
    out: dict[str, Any] = {"models": models, "bandwidths_mbps": list(bandwidths), "requests": requests,
                           "overrides": args.overrides}
    t0 = time.perf_counter()
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if "search" in parts:
        log("search cost (COACH divide and conquer vs exhaustive):")
        out["search"] = search_cost(log)
    if "table1" in parts:
        log("Table I:")
        t1 = table_one(models, bandwidths, requests, log)
        t1.to_csv(out_path.with_name("coach_table1_runs.csv"), index=False)
        shaped = t1.groupby(["model", "device", "policy"])["latency_ms"].mean().unstack([0, 1])
        shaped = shaped.reindex([SHORT[p] for p in POLICIES])
        log(shaped.round(2).to_string())
        out["table1_latency_ms"] = {f"{m}/{d}": shaped[(m, d)].round(3).to_dict() for m, d in shaped.columns}
        out["table1_runs"] = t1.to_dict(orient="records")
        out["ratios"] = _ratios(t1)
    if "table2" in parts:
        log("Table II (COACH, NX, 20 Mbps, 20 fps):")
        t2 = table_two(models, 2 * requests + 200, 20, log)
        out["table2"] = t2.to_dict(orient="records")
        log(t2[["model", "cache", "level", "exit_ratio", "latency_ms", "kb_per_task", "accuracy"]].round(3).to_string(index=False))
    if "fig5" in parts:
        log("Fig. 5 (throughput under bandwidth drops, NX):")
        specs = [m for m in args.fig5_models.split(",") if m] if args.fig5_models else models[:1]
        f5 = pd.concat([drops(spec, log, 30.0 if args.quick else 60.0, readings, steps_list, policies)
                        for spec in specs],
                       ignore_index=True)
        out["fig5"] = f5.to_dict(orient="records")
        f5.to_csv(out_path.with_name("coach_fig5_runs.csv"), index=False)
        summary = _fig5_summary(f5)
        summary.to_csv(out_path.with_name("coach_fig5.csv"), index=False)
        out["fig5_summary"] = summary.to_dict(orient="records")
        log(summary.round(2).to_string(index=False))
        piv = f5.pivot_table(index=["drop", "phase_mbps"], columns="policy", values="dynamic_throughput", sort=False)
        out["fig5_throughput_x"] = {f"{d}/{m}/{c}_vs_{b}": float(piv.loc[(d, m), c] / piv.loc[(d, m), b])
                                    for d, m in piv.index for b in ("NS", "JPS") for c in piv.columns
                                    if c.startswith("COACH")}
        _plot(f5, out_path.with_name("coach_fig5.png"))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    from vip_ray.coach.runner import plain

    out_path.write_text(json.dumps(plain(out), indent=1))
    log(f"wrote {out_path} ({out['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
