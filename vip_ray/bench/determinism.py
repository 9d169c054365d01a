"""Is CPU training bit-reproducible, and how far apart are pools trained apart?

    python -m vip_ray.bench.determinism [--members vp_v1] [--epochs 0] [--pools SPEC,...]

1. **Bits.** Trains default-pool members (the default pool's config: MNIST-5k, its seeds and
   phases; ``--epochs N`` shortens the schedule) in fresh processes under several settings and
   compares what a pool stores, the prediction bank (test logits) and the weights:
   run to run (1 thread, twice); 1 vs 2 torch threads; ``torch.use_deterministic_algorithms``
   on vs off; and "another machine" — the same training with ATen, oneDNN and MKL held to AVX2
   (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``) on a CPU that
   has AVX-512; and, on the full schedule, the 1-thread training here against the shipped
   reference pool's bank (trained in Ray Tune trials). Each training runs in its own process
   (threads and flags are process-wide, as in a Ray Tune trial).
2. **Spread** (``--pools``). Trains whole default pools with the project's own training command
   (``train_pool``, as ``vip-sim pools default --retrain`` does) under other settings —
   ``seed=1``: another global seed; ``cpu=2``: two torch threads per trial — and sets each beside
   the shipped reference pool: members' top-1, VP's top-2 ensemble, and the main job's table
   (``scenarios/smart_home.yaml``) simulated on each pool.

Prints tables; writes ``results/bench/determinism.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _child(spec: dict) -> None:
    """Train one setting and save logits + weights digests (runs in a fresh process)."""
    import torch

    from vip_ray.data import load_dataset
    from vip_ray.pool.default import DEFAULT_OVERRIDES
    from vip_ray.training.trainer import train_group
    from vip_ray.tune.config import compose
    from vip_ray.tune.plan import plan_pool

    cfg = compose([*DEFAULT_OVERRIDES, f"seed={spec['seed']}"])
    data = load_dataset(cfg["data"])
    plan = plan_pool(cfg, data.num_classes, data.channels)
    stage = plan.stages[-1]
    phases = [dict(p) for p in stage.phases]
    if spec["epochs"]:
        phases = [{**phases[0], "epochs": int(spec["epochs"])}]
    out = {}
    t0 = time.perf_counter()
    for m in (m for g in stage.groups for m in g if m["id"] in spec["members"]):
        r = train_group({"members": [m], "data": cfg["data"], "train": cfg["train"], "phases": phases,
                         "threads": spec["threads"], "deterministic": spec["deterministic"]}, data=data)
        logits = np.asarray(r["logits"][m["id"]], dtype=np.float32)
        weights = hashlib.sha256()
        for k, v in sorted(r["weights"][m["id"]].items()):
            weights.update(k.encode())
            weights.update(v.detach().cpu().contiguous().numpy().tobytes())
        out[m["id"]] = {"logits": logits, "weights_sha256": weights.hexdigest(),
                        "top1": float((logits.argmax(1) == data.test_y.numpy()).mean())}
    np.savez(spec["out"], **{f"{k}__logits": v["logits"] for k, v in out.items()})
    Path(spec["out"] + ".json").write_text(json.dumps({
        k: {"weights_sha256": v["weights_sha256"], "top1": v["top1"]} for k, v in out.items()}
        | {"_seconds": time.perf_counter() - t0, "_torch_threads_seen": torch.get_num_threads()}))


AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _train(spec: dict, tmp: Path) -> dict:
    spec = {**spec, "out": str(tmp / f"{spec['name']}.npz")}
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), **spec.get("env", {})}
    subprocess.run([sys.executable, "-m", "vip_ray.bench.determinism", "--child", json.dumps(spec)],
                   check=True, env=env)
    meta = json.loads(Path(spec["out"] + ".json").read_text())
    with np.load(spec["out"]) as z:
        logits = {k.split("__")[0]: z[k] for k in z.files}
    return {"logits": logits, "meta": meta}


def _compare(a: dict, b: dict) -> dict:
    rows = {}
    for mid in a["logits"]:
        la, lb = a["logits"][mid], b["logits"][mid]
        rows[mid] = {"bank_identical": bool(np.array_equal(la, lb)),
                     "weights_identical": a["meta"][mid]["weights_sha256"] == b["meta"][mid]["weights_sha256"],
                     "max_abs_logit_diff": float(np.max(np.abs(la - lb))),
                     "argmax_agreement": float((la.argmax(1) == lb.argmax(1)).mean()),
                     "top1": [a["meta"][mid]["top1"], b["meta"][mid]["top1"]]}
    return rows


def _reference_run(members: list[str]) -> dict:
    """The shipped reference pool's rows for ``members``, shaped like a training run."""
    from vip_ray.pool import Pool, reference_root

    ref = Pool.open(reference_root() / "default")
    meta = {}
    for mid in members:
        weights = hashlib.sha256()
        for k, v in sorted(ref.state_dict(mid).items()):
            weights.update(k.encode())
            weights.update(v.detach().cpu().contiguous().numpy().tobytes())
        meta[mid] = {"weights_sha256": weights.hexdigest(), "top1": ref.manifest.member(mid).accuracy}
    return {"logits": {mid: ref.logits([mid])[0] for mid in members}, "meta": meta}


def _bits(console, members: list[str], epochs: int, only: list[str] | None) -> dict:
    from rich.table import Table

    base = {"members": members, "epochs": epochs, "seed": 0, "threads": 1, "deterministic": True}
    settings = {
        "t1": base,
        "t1_again": base,
        "t2": {**base, "threads": 2},
        "t1_default_algorithms": {**base, "deterministic": False},
        "t1_avx2": {**base, "env": AVX2_ONLY},
    }
    pairs = [("run to run (1 thread)", "t1", "t1_again"),
             ("deterministic vs default algorithms (1 thread)", "t1", "t1_default_algorithms"),
             ("1 vs 2 torch threads", "t1", "t2"),
             ("AVX-512 vs AVX2 kernels (1 thread)", "t1", "t1_avx2")]
    if not epochs:  # the full schedule is what the reference pool ran: in-process here vs its Ray Tune trial
        pairs.append(("here in-process vs the shipped reference (1 thread)", "t1", "reference"))
    unknown = sorted(set(only or ()) - set(settings))
    if unknown:
        raise SystemExit(f"--settings {','.join(unknown)}: unknown; allowed: {', '.join(settings)}")
    with tempfile.TemporaryDirectory(prefix="vrdet") as tmp:
        runs = {name: _train({**s, "name": name}, Path(tmp)) for name, s in settings.items()
                if not only or name in only}
    if not epochs:
        runs["reference"] = _reference_run(members)
    pairs = [p for p in pairs if p[1] in runs and p[2] in runs]
    out = {}
    t = Table(title=f"1. CPU training bits: {', '.join(members)}, {epochs or 'full'} epoch(s), default pool config")
    for col in ("comparison", "member", "bank identical", "weights identical", "max |Δ logit|", "same prediction",
                "top-1 a / b"):
        t.add_column(col)
    for label, a, b in pairs:
        rows = _compare(runs[a], runs[b])
        out[label] = rows
        for mid, r in rows.items():
            t.add_row(label, mid, str(r["bank_identical"]), str(r["weights_identical"]),
                      f"{r['max_abs_logit_diff']:.3g}", f"{r['argmax_agreement']:.2%}",
                      f"{r['top1'][0]:.2%} / {r['top1'][1]:.2%}")
    console.print(t)
    return {"members": members, "epochs": epochs, "pairs": out,
            "seconds_per_training": {k: round(v["meta"]["_seconds"], 1) for k, v in runs.items() if k != "reference"}}


def _smart_home(pool_root: str | None, pool_name: str, out: Path) -> dict:
    from vip_ray.experiment.run import run_scenario

    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "smart_home.yaml"
    sets = [f"pool.name={pool_name}"] + ([f"pool.root={pool_root}"] if pool_root else [])
    run = run_scenario(scenario, overrides=sets, out=out, plots=False, log=lambda s: None)
    metrics = json.loads((run / "summary.json").read_text())["metrics"]
    keys = ("accuracy_top1", "deadline_met", "latency_p50_s", "latency_p99_s")
    return {k: metrics[k]["mean"] for k in keys if k in metrics}


def _spread(console, specs: list[str], keep: str | None = None) -> dict:
    """Whole default pools trained here under other settings, beside the shipped reference."""
    from rich.table import Table

    from vip_ray.experiment.pools import compare_banks
    from vip_ray.pool import Pool, reference_root
    from vip_ray.pool.default import DEFAULT_OVERRIDES
    from vip_ray.pool.report import ensemble_accuracy
    from vip_ray.tune.config import compose
    from vip_ray.tune.runner import train_pool

    allowed = {"seed": "seed={}", "cpu": "resources.cpu={}"}
    reference = Pool.open(reference_root() / "default")
    result = {}
    with tempfile.TemporaryDirectory(prefix="vrspread") as scratch:
        # --keep: the trained pools and runs outlive the bench (half an hour of training each, loaded)
        tmp = str(Path(keep).resolve()) if keep else scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        ray_tmp = tempfile.mkdtemp(prefix="vrs", dir="/tmp")
        pools = {"reference (seed 0, 1 thread)": (None, reference)}
        for spec in specs:
            key, _, value = spec.partition("=")
            if key not in allowed or not value:
                raise SystemExit(f"--pools {spec!r}: expected seed=N or cpu=N")
            name = f"default-{key}{value}"
            t0 = time.time()
            path = train_pool(compose([*DEFAULT_OVERRIDES, allowed[key].format(value), f"pool.name={name}",
                                       f"pool.root={tmp}/pools", f"tune.storage={tmp}/tune", "tune.verbose=0",
                                       "ray.dashboard=false", f"ray.temp_dir={ray_tmp}"]), log=lambda s: None)
            pools[f"{spec} ({time.time() - t0:.0f} s)"] = (f"{tmp}/pools", Pool.load(path))
        variants = reference.manifest.ids("variant")
        t = Table(title="2. default pools trained apart, beside the shipped reference")
        for col in ("pool", *reference.manifest.ids(), "VP top-2 ensemble", "same predictions as reference",
                    "smart_home accuracy", "deadline met", "p50 latency", "p99 latency"):
            t.add_column(col)
        for label, (root, pool) in pools.items():
            cmp = compare_banks(pool, reference)
            sim = _smart_home(root, pool.name, Path(tmp) / f"run-{len(result)}")
            row = {"top1": {r["member"]: r["top1_local"] for r in cmp},
                   "same_prediction_as_reference": {r["member"]: r["same_prediction"] for r in cmp},
                   "bit_identical": {r["member"]: r["bit_identical"] for r in cmp},
                   "vp_top2_ensemble": ensemble_accuracy(pool, variants, method="vp", k=2)["top1"],
                   "smart_home": sim, "bank_sha256": pool.bank_sha256}
            result[label] = row
            same = np.mean(list(row["same_prediction_as_reference"].values()))
            t.add_row(label, *(f"{row['top1'][m]:.2%}" for m in reference.manifest.ids()),
                      f"{row['vp_top2_ensemble']:.2%}", f"{same:.2%}", f"{sim['accuracy_top1']:.2%}",
                      f"{sim['deadline_met']:.2%}", f"{1e3 * sim['latency_p50_s']:.2f} ms",
                      f"{1e3 * sim['latency_p99_s']:.2f} ms")
        console.print(t)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", default="vp_v1", help="part 1: comma-separated default-pool member ids (default vp_v1)")
    p.add_argument("--epochs", type=int, default=0, help="part 1: epochs per training (0 = the pool's own schedule)")
    p.add_argument("--settings", default="", help="part 1: only these settings (t1, t1_again, t2, "
                                                   "t1_default_algorithms, t1_avx2; default: all)")
    p.add_argument("--skip-bits", action="store_true", help="skip part 1")
    p.add_argument("--pools", default="", help="part 2: pools to train, e.g. seed=1,cpu=2 (default: none)")
    p.add_argument("--keep", default=None, help="part 2: keep the trained pools and runs in this folder")
    p.add_argument("--out", default="results/bench/determinism.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return 0
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from rich.console import Console

    console = Console(width=max(160, Console().width))  # whole rows in pipes and logs too
    t0 = time.time()
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": {"platform": platform.platform(),
              "cpus": os.cpu_count(), "load_average_start": os.getloadavg(), "cpu": _cpu_model()},
              "command": " ".join(["python -m vip_ray.bench.determinism",
                                   *(argv if argv is not None else sys.argv[1:])])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after each part: a long second part never loses the first
        result["machine"]["load_average_end"] = os.getloadavg()
        result["wall_seconds"] = round(time.time() - t0, 1)
        out.write_text(json.dumps(result, indent=2))

    if not args.skip_bits:
        result["bits"] = _bits(console, [m.strip() for m in args.members.split(",") if m.strip()], args.epochs,
                               [x.strip() for x in args.settings.split(",") if x.strip()])
        save()
    specs = [s.strip() for s in args.pools.split(",") if s.strip()]
    if specs:
        result["spread"] = _spread(console, specs, args.keep)
        save()
    save()
    console.print(f"wrote {out} ({result['wall_seconds']} s)")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
