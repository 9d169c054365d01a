"""Training benchmark: ``python -m vip_ray.bench.training [--quick] [--out FILE]``.

Prints, on this machine:
  1. training throughput (images/s) per member of the default pool and for the whole pool;
  2. the teacher's share of the KD cost (VIP students of ResNet50);
  3. a heterogeneous KD pool trained jointly (one pipeline, one teacher forward per batch)
     vs one trial per variant, in-process and under Ray Tune — the ratio;
  4. Ray Tune parallel speedup: 2 concurrent trials (1 CPU each) vs the same two trainings
     run one after the other in one process (1 torch thread: the same work; and 2 threads).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def _cfg(*overrides):
    from vip_ray.tune.config import compose

    return compose(list(overrides))


def _group(cfg, members, phases, threads=1):
    return {"members": members, "data": cfg["data"], "train": cfg["train"], "phases": phases, "threads": threads}


def throughput(console: Console, epochs: int) -> dict:
    from vip_ray.data import load_dataset
    from vip_ray.training.trainer import train_group
    from vip_ray.tune.plan import plan_pool

    cfg = _cfg("data=mnist5k", "family=vp")
    data = load_dataset(cfg["data"])
    plan = plan_pool(cfg, data.num_classes, data.channels)
    phases = [{"name": "bench", "epochs": epochs, "lr": 3e-3}]
    rows, images, seconds = {}, 0, 0.0
    for m in plan.members:
        r = train_group(_group(cfg, [m], phases), data=data)
        st = r["stats"][m["id"]]
        rows[m["id"]] = st["images_per_s"]
        images += epochs * len(data.train_y)
        seconds += st["train_seconds"]
    t = Table(title=f"1. training throughput, default pool (mnist5k, 1 thread, {epochs} epoch(s))")
    t.add_column("member")
    t.add_column("images/s", justify="right")
    for k, v in rows.items():
        t.add_row(k, f"{v:,.0f}")
    t.add_row("whole pool (sequential)", f"{images / seconds:,.0f}")
    console.print(t)
    return {"per_member": rows, "pool_images_per_s": images / seconds}


def _train_teacher(cfg, data, plan, tmp: Path) -> dict:
    from vip_ray.training.trainer import train_group

    teacher = plan.members[0]
    r = train_group(_group(cfg, [teacher], [{"name": "t", "epochs": 1, "lr": 1e-3}], threads=2), data=data)
    import torch

    path = tmp / "teacher.pt"
    torch.save(r["weights"][teacher["id"]], path)
    return {"model": teacher["model"], "build": teacher["build"], "weights_path": str(path)}


def kd_joint(console: Console, limit: int, tmp: Path) -> dict:
    from vip_ray.data import load_dataset
    from vip_ray.training.trainer import train_group
    from vip_ray.tune.plan import plan_pool

    cfg = _cfg("data=mnist5k", f"data.limit={limit}", "family=resnet50_slices", "shape.segments=[1,2,3,4]",
               "train.kd=true", "family.pretrained=never")
    data = load_dataset(cfg["data"])
    plan = plan_pool(cfg, data.num_classes, data.channels)
    teacher = _train_teacher(cfg, data, plan, tmp)
    students = [m for m in plan.members if m["role"] == "variant"]
    phases = [{"name": "finetune", "epochs": 1, "lr": 1e-3}]
    t0 = time.perf_counter()
    joint = train_group({**_group(cfg, students, phases), "teacher": teacher}, data=data)
    joint_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    separate_teacher = 0.0
    separate_train = 0.0
    for m in students:
        r = train_group({**_group(cfg, [m], phases), "teacher": teacher}, data=data)
        separate_teacher += r["teacher_seconds"]
        separate_train += r["stats"][m["id"]]["train_seconds"]
    separate_s = time.perf_counter() - t0
    share = separate_teacher / separate_train
    joint_share = joint["teacher_seconds"] / sum(s["train_seconds"] for s in joint["stats"].values())
    t = Table(title=f"2./3. KD cost, ResNet50 students s1–s4 at 32 px ({limit} images, 1 thread, 1 epoch)")
    for c in ("setup", "wall s", "teacher share of KD cost"):
        t.add_column(c, justify="right")
    t.add_row("one group per variant (separate teacher forwards)", f"{separate_s:.1f}", f"{share:.1%}")
    t.add_row("joint group (one teacher forward per batch)", f"{joint_s:.1f}", f"{joint_share:.1%}")
    t.add_row("ratio separate / joint", f"{separate_s / joint_s:.2f}×", "")
    console.print(t)
    return {"separate_s": separate_s, "joint_s": joint_s, "ratio": separate_s / joint_s,
            "teacher_share_separate": share, "teacher_share_joint": joint_share}


def _tune_wall(overrides: list[str], tmp: Path, tag: str, dashboard: bool = True) -> dict:
    """Wall seconds of a Tune training: Ray start, fit (train_pool on the running cluster), shutdown."""
    import ray

    from vip_ray.interrupts import start_ray
    from vip_ray.tune.runner import train_pool

    cfg = _cfg(*overrides, f"pool.root={tmp}/pools-{tag}", f"tune.storage={tmp}/tune-{tag}", "tune.verbose=0",
               f"pool.name=bench-{tag}")
    t0 = time.perf_counter()
    start_ray(include_dashboard=dashboard, log_to_driver=False)
    t1 = time.perf_counter()
    train_pool(cfg, log=lambda s: None)
    t2 = time.perf_counter()
    ray.shutdown()
    t3 = time.perf_counter()
    return {"ray_start_s": t1 - t0, "fit_s": t2 - t1, "shutdown_s": t3 - t2, "total_s": t3 - t0}


def tune_joint_vs_per_trial(console: Console, limit: int, tmp: Path) -> dict:
    common = ["data=mnist5k", f"data.limit={limit}", "family=resnet50_slices", "shape.segments=[1,2,3,4]",
              "train.kd=true", "family.pretrained=never", "train.teacher_epochs=1", "train.teacher_cycles=1",
              "family.phases=[{name:finetune,epochs:1,lr:1e-3}]"]
    per = _tune_wall(common + ["train.mode=per_variant"], tmp, "per")["fit_s"]
    joint = _tune_wall(common + ["train.mode=joint", "resources.cpu=2"], tmp, "joint")["fit_s"]
    t = Table(title="3. under Ray Tune: teacher stage + 4 KD students (fit wall seconds, 2 CPUs)")
    t.add_column("mode")
    t.add_column("wall s", justify="right")
    t.add_row("per_variant (4 trials, 1 CPU each, 2 at a time)", f"{per:.1f}")
    t.add_row("joint (1 trial, 2 CPUs)", f"{joint:.1f}")
    t.add_row("ratio per_variant / joint", f"{per / joint:.2f}×")
    console.print(t)
    return {"per_variant_s": per, "joint_s": joint, "ratio": per / joint}


def tune_speedup(console: Console, epochs: int, tmp: Path) -> dict:
    """Two equal trainings (two seeds of vp_v5): Tune with 2 concurrent 1-CPU trials vs the same
    trainings one after the other in one process — with 1 thread (the same work, limit 2×) and
    with 2 threads (what one process could get out of this machine on its own)."""
    from vip_ray.data import load_dataset
    from vip_ray.training.trainer import train_group
    from vip_ray.tune.plan import plan_pool

    overrides = ["data=mnist5k", "family=vp", "shape=homogeneous", "shape.segment=5", "shape.n=2",
                 "shape.baseline=false", "family.baselines=[]",
                 f"family.phases=[{{name:scratch,epochs:{epochs},lr:3e-3,schedule:cosine}}]"]
    cfg = _cfg(*overrides)
    data = load_dataset(cfg["data"])
    plan = plan_pool(cfg, data.num_classes, data.channels)
    sequential, per_training = {}, {}
    for threads in (1, 2):
        t0 = time.perf_counter()
        per_training[threads] = []
        for m in plan.members:
            t1 = time.perf_counter()
            train_group(_group(cfg, [m], cfg["family"]["phases"], threads=threads), data=data)
            per_training[threads].append(time.perf_counter() - t1)
        sequential[threads] = time.perf_counter() - t0
    tuned = {dash: _tune_wall(overrides + ["resources.cpu=1"], tmp, f"speedup-{dash}", dashboard=dash)
             for dash in (True, False)}
    t = Table(title=f"4. Ray Tune parallel speedup: 2 × vp_v5 (two seeds), {epochs} epochs on mnist5k, "
                    f"2 concurrent trials × 1 CPU")
    t.add_column("sequential in one process")
    t.add_column("wall s", justify="right")
    for dash in (True, False):
        t.add_column(f"Tune fit / total, dashboard {'on' if dash else 'off'}", justify="right")
    for threads in (1, 2):
        t.add_row(f"{threads} thread(s) (per training: " + ", ".join(f"{s:.0f}" for s in per_training[threads]) + " s)",
                  f"{sequential[threads]:.1f}",
                  *[f"{sequential[threads] / tuned[d]['fit_s']:.2f}× / {sequential[threads] / tuned[d]['total_s']:.2f}×"
                    for d in (True, False)])
    console.print(t)
    for dash in (True, False):
        w = tuned[dash]
        console.print(f"Tune wall, dashboard {'on' if dash else 'off'}: Ray start {w['ray_start_s']:.1f} s, "
                      f"fit {w['fit_s']:.1f} s, shutdown {w['shutdown_s']:.1f} s")
    return {"sequential_1thread_s": sequential[1], "sequential_2threads_s": sequential[2],
            "per_training_s": per_training, "tune": {"dashboard_on": tuned[True], "dashboard_off": tuned[False]},
            "speedup_fit_vs_1thread": sequential[1] / tuned[True]["fit_s"],
            "speedup_total_vs_1thread": sequential[1] / tuned[True]["total_s"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke check, not the figures)")
    p.add_argument("--out", default="results/bench/training.json")
    p.add_argument("--only", nargs="*", default=None, choices=["throughput", "kd", "tune_joint", "speedup"])
    args = p.parse_args(argv)
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="vr-bench"))
    only = set(args.only or ["throughput", "kd", "tune_joint", "speedup"])
    out = {}
    try:
        if "throughput" in only:
            out["throughput"] = throughput(console, epochs=1)
        if "kd" in only:
            out["kd"] = kd_joint(console, limit=500 if args.quick else 1500, tmp=tmp)
        if "tune_joint" in only:
            out["tune_joint"] = tune_joint_vs_per_trial(console, limit=500 if args.quick else 1500, tmp=tmp)
        if "speedup" in only:
            out["speedup"] = tune_speedup(console, epochs=1 if args.quick else 5, tmp=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from vip_ray.tune.runner import versions

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"results": out, "versions": versions(), "cpus": os.cpu_count()}, indent=2))
    console.print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
