"""Is CPU training bit-reproducible? ``python -m vip_ray.bench.determinism [--members vp_v1] [--epochs 1]``.

Trains default-pool members (the default pool's config: MNIST-5k, its seeds and phases, fewer
epochs unless ``--epochs`` says otherwise) in fresh processes under several settings and
compares what a pool stores: the prediction bank (test logits) and the weights.

* run-to-run: the same setting twice (1 thread);
* thread count: 1 vs 2 torch threads, with and without ``torch.use_deterministic_algorithms``;
* seed spread: ``--seeds`` trains the same members with other global seeds (top-1 spread), the
  statistical reproducibility a retrained pool can promise.

Each training runs in its own process (thread count and determinism flags are process-wide,
as in a Ray Tune trial). Prints a table; writes ``results/bench/determinism.json``.
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


def _train(spec: dict, tmp: Path) -> dict:
    spec = {**spec, "out": str(tmp / f"{spec['name']}.npz")}
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", default="vp_v1", help="comma-separated default-pool member ids (default vp_v1)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per training (0 = the pool's own schedule)")
    p.add_argument("--seeds", default="", help="extra global seeds for the spread, e.g. 1,2 (full schedule)")
    p.add_argument("--out", default="results/bench/determinism.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, Console().width))  # whole rows in pipes and logs too
    members = [m.strip() for m in args.members.split(",") if m.strip()]
    base = {"members": members, "epochs": args.epochs, "seed": 0}
    settings = {
        "t1_det": {**base, "threads": 1, "deterministic": True},
        "t1_det_again": {**base, "threads": 1, "deterministic": True},
        "t2_det": {**base, "threads": 2, "deterministic": True},
        "t1_nodet": {**base, "threads": 1, "deterministic": False},
        "t2_nodet": {**base, "threads": 2, "deterministic": False},
    }
    pairs = [("run to run (1 thread, deterministic)", "t1_det", "t1_det_again"),
             ("1 vs 2 threads, deterministic algorithms", "t1_det", "t2_det"),
             ("1 vs 2 threads, default algorithms", "t1_nodet", "t2_nodet"),
             ("deterministic vs default algorithms (1 thread)", "t1_det", "t1_nodet")]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="vrdet") as tmp:
        runs = {name: _train({**s, "name": name}, Path(tmp)) for name, s in settings.items()}
        spread_runs = {seed: _train({**base, "epochs": 0, "seed": seed, "threads": 1, "deterministic": True,
                                     "name": f"seed{seed}"}, Path(tmp)) for seed in seeds}
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": {"platform": platform.platform(),
              "cpus": os.cpu_count(), "load_average_start": os.getloadavg(), "cpu": _cpu_model()},
              "members": members, "epochs": args.epochs, "wall_seconds": None, "pairs": {}, "seed_spread": {}}
    t = Table(title=f"CPU training determinism: {', '.join(members)}, {args.epochs or 'full'} epoch(s)")
    for col in ("comparison", "member", "bank identical", "weights identical", "max |Δ logit|", "argmax agree",
                "top-1 a / b"):
        t.add_column(col)
    for label, a, b in pairs:
        rows = _compare(runs[a], runs[b])
        result["pairs"][label] = rows
        for mid, r in rows.items():
            t.add_row(label, mid, str(r["bank_identical"]), str(r["weights_identical"]),
                      f"{r['max_abs_logit_diff']:.3g}", f"{r['argmax_agreement']:.2%}",
                      f"{r['top1'][0]:.2%} / {r['top1'][1]:.2%}")
    console.print(t)
    if spread_runs:
        for mid in members:
            top1 = [spread_runs[s]["meta"][mid]["top1"] for s in seeds]
            result["seed_spread"][mid] = {"seeds": seeds, "top1": top1, "range": max(top1) - min(top1)}
            console.print(f"seed spread {mid} (full schedule, seeds {seeds}): top-1 "
                          f"{', '.join(f'{x:.2%}' for x in top1)} (range {100 * (max(top1) - min(top1)):.2f} points)")
    result["wall_seconds"] = round(time.time() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
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
