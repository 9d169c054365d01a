"""VIP's comparison on our data: ``python -m vip_ray.bench.vip_table [--quick] [--seeds 0 1 2] [--out-dir DIR]``.

For every seed: the ResNet50 teacher T (trained with ``train.teacher_*``), then on the VIP family
(``family=resnet50_slices shape=homogeneous``, students s3 sliced out of T and started from its
weights) the plain same-size baseline B and, per diversity strategy (filters, crops, imbalance; VIP
Table II), its students — every one of them trained twice, with and without knowledge distillation
(``train.kd=both``). The prediction bank of each student on the held-out test split gives its
accuracy and the ensemble's (VIP §III-D: average of the students' probabilities).

Writes to ``--out-dir`` (default results/bench):
  vip_table.csv          one row per quantity (T, B, single students, best student, ensemble E, gap
                         closed, KD gains, the teacher's margin): mean over seeds, 95 % CI half-width
                         (Student t), per-seed values;
  vip_table_members.csv  every trained model's test accuracy per seed;
  vip_table_teacher.csv  per seed: the teacher's accuracy against its best student;
  vip_table.png          the table as a bar chart; vip_table.md the README table;
  vip_table_cache/       each finished training (re-running the command skips it; delete to retrain).

Trainings run in ``--workers`` processes of one torch thread each, seed by seed (a seed's students
start as soon as its teacher is done), so a run cut short leaves whole seeds in the cache.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import date
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

STRATEGIES = ("filters", "crops", "imbalance")
TABLE_COLUMNS = ("row", "strategy", "kd", "members", "seeds", "mean", "ci95", "unit", "per_seed")
MEMBER_COLUMNS = ("seed", "strategy", "kd", "member", "role", "accuracy_pct")
TEACHER_COLUMNS = ("seed", "teacher_pct", "best_student_pct", "best_student", "margin_points", "teacher_beats_all")
# --quick: a smoke test of the whole pipeline in about a minute, not figures
QUICK_OVERRIDES = ("data.limit=300", "family.input_size=16", "shape.n=2", "train.batch_size=32",
                   "train.teacher_epochs=1", "family.phases=[{name:finetune,epochs:1,lr:1e-3}]")


class BenchError(ValueError):
    """Bad input to the benchmark; the message names the option and the allowed values."""


@dataclass
class Job:
    """One training: a seed's teacher, or the students of one strategy (and B) at one KD setting."""

    key: str
    seed: int
    kind: str                  # "teacher_cycle" (not the last), "teacher" (the last cycle) | "students"
    strategy: str | None
    kd: bool | None
    group: dict[str, Any]      # train_group's config, less the teacher entry
    after: str | None          # the job whose weights this one needs: the teacher (students), the
                               # previous cycle (a teacher cycle continues from it)


# ---------------------------------------------------------------------------------------------
# Planning: the Tune config's own members, so the benchmark trains what `python -m vip_ray.tune` would
# ---------------------------------------------------------------------------------------------


def compose_strategy(strategy: str, seed: int, overrides: list[str]) -> dict[str, Any]:
    from vip_ray.tune.config import compose

    return compose(["family=resnet50_slices", "shape=homogeneous", f"diversity={strategy}", "train.kd=both",
                    f"seed={seed}", "train.eval_every=1000000", *overrides])


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_jobs(seeds: list[int], strategies: list[str], overrides: list[str]) -> list[Job]:
    """Teacher job per seed; per seed, strategy and KD setting one joint group of students (and B,
    trained with the first strategy's group), all members with the plan's own ids and seeds."""
    from vip_ray.data import load_dataset
    from vip_ray.tune.plan import plan_pool

    jobs: list[Job] = []
    for seed in seeds:
        teacher_job = None
        for si, strategy in enumerate(strategies):
            cfg = compose_strategy(strategy, seed, overrides)
            data = load_dataset(cfg["data"])
            plan = plan_pool(cfg, data.num_classes, data.channels)
            common = {"data": cfg["data"], "train": cfg["train"], "threads": 1}
            if teacher_job is None:
                # one job per cosine cycle (train.teacher_cycles), each from the previous one's weights,
                # so that a finished cycle is cached; the trainer starts a new optimizer per phase anyway
                teacher = plan.stages[0].groups[0][0]
                phases = plan.stages[0].phases
                for c, phase in enumerate(phases):
                    member = teacher if c == 0 else {**teacher, "seed": teacher["seed"] + 7919 * c}
                    group = {**common, "members": [member], "phases": [phase]}
                    after = teacher_job.key if teacher_job else None
                    key = f"seed{seed}-teacher" + (f"-c{c + 1}" if c else "") + f"-{_digest([group, after])}"
                    teacher_job = Job(key, seed, "teacher" if c == len(phases) - 1 else "teacher_cycle", None, None,
                                      group, after)
                    jobs.append(teacher_job)
            students = plan.stages[-1].groups
            members = [m for g in students for m in g]
            for kd in (True, False):
                chosen = [m for m in members if m["kd"] == kd and (m["role"] == "variant" or si == 0)]
                group = {**common, "members": chosen, "phases": plan.stages[-1].phases}
                key = f"seed{seed}-{strategy}-{'kd' if kd else 'nokd'}-{_digest([group, teacher_job.key])}"
                jobs.append(Job(key, seed, "students", strategy, kd, group, teacher_job.key))
    return jobs


# ---------------------------------------------------------------------------------------------
# Running (each job in its own process, results cached on disk)
# ---------------------------------------------------------------------------------------------


def run_job(job: Job, cache: Path) -> Path:
    """Train ``job`` (its teacher's weights must be in ``cache``); save test logits (and the teacher's
    weights) under ``cache``; return the result file. Runs in a worker process."""
    import torch

    from vip_ray.training.trainer import train_group

    group = dict(job.group)
    if job.after and job.kind == "students":
        teacher = torch.load(cache / f"{job.after}.pt", weights_only=False)
        group["teacher"] = {"model": teacher["model"], "build": teacher["build"],
                            "weights_path": str(cache / f"{job.after}.weights.pt")}
    elif job.after:  # the next cosine cycle of the teacher starts from the previous one's weights
        group["members"] = [{**m, "start_from": str(cache / f"{job.after}.weights.pt")} for m in group["members"]]
    t0 = time.perf_counter()
    result = train_group(group)
    out = {"logits": result["logits"], "roles": {m["id"]: m["role"] for m in job.group["members"]},
           "kd": {m["id"]: bool(m["kd"]) for m in job.group["members"]}, "stats": result["stats"],
           "wall_s": time.perf_counter() - t0, "fingerprint": result["fingerprint"]}
    if job.kind != "students":
        member = job.group["members"][0]
        torch.save(result["weights"][member["id"]], cache / f"{job.key}.weights.pt")
        out.update(model=member["model"], build=member["build"])
    path = cache / f"{job.key}.pt"
    torch.save(out, str(path) + ".part")
    os.replace(str(path) + ".part", path)  # a result file is complete or absent
    return path


def _claim(cache: Path, key: str) -> bool:
    """Take ``key`` for this process (a lock file holding our pid), so that several runs of the
    benchmark on one cache share the work; a lock whose process is gone is taken over."""
    lock = cache / f"{key}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or 0), 0)
                return False  # another live run trains it
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)  # its run is gone
                continue
            except PermissionError:
                return False
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def run_jobs(jobs: list[Job], cache: Path, workers: int, log: Callable[[str], None],
             poll_s: float = 10.0) -> None:
    """Run every job not cached yet, seed by seed (a run cut short leaves whole seeds); a seed's
    students start once its teacher is cached. Jobs another live run of this benchmark has taken
    are waited for, not repeated."""
    cache.mkdir(parents=True, exist_ok=True)

    def cached(key: str | None) -> bool:
        return key is None or (cache / f"{key}.pt").exists()

    todo = [j for j in jobs if not cached(j.key)]
    log(f"[vip_table] {len(jobs) - len(todo)} of {len(jobs)} trainings cached in {cache}; {len(todo)} to run "
        f"in {workers} process(es)")
    started = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) if workers > 1 else None
    running: dict[Any, Job] = {}
    try:
        while todo or running:
            todo = [j for j in todo if not cached(j.key)]
            ready = sorted((j for j in todo if cached(j.after)), key=lambda j: (j.seed, j.kind == "students"))
            for j in ready:
                if len(running) >= workers:
                    break
                if not _claim(cache, j.key):
                    continue
                todo.remove(j)
                if pool is None:  # in this process: the smoke test, and debugging
                    try:
                        run_job(j, cache)
                    finally:
                        (cache / f"{j.key}.lock").unlink(missing_ok=True)
                    log(f"[vip_table] done {j.key} ({time.perf_counter() - started:.0f} s since start)")
                else:
                    running[pool.submit(run_job, j, cache)] = j
            if pool is None and any(cached(j.after) and _claimable(cache, j.key) for j in todo):
                continue
            if not running:
                if todo:  # what is left is being trained by another run, or waits for its teacher there
                    time.sleep(poll_s)
                continue
            done, _ = wait(running, timeout=poll_s, return_when=FIRST_COMPLETED)
            for f in done:
                j = running.pop(f)
                (cache / f"{j.key}.lock").unlink(missing_ok=True)
                f.result()  # a failed training stops the benchmark with its error
                log(f"[vip_table] done {j.key} ({time.perf_counter() - started:.0f} s since start)")
    finally:
        for j in running.values():
            (cache / f"{j.key}.lock").unlink(missing_ok=True)
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _claimable(cache: Path, key: str) -> bool:
    lock = cache / f"{key}.lock"
    if not lock.exists():
        return True
    try:
        os.kill(int(lock.read_text() or 0), 0)
        return False
    except (ProcessLookupError, ValueError):
        return True
    except PermissionError:
        return False


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def ci95(values: list[float]) -> tuple[float, float]:
    """Mean and 95 % CI half-width of the mean (Student t with n − 1 degrees of freedom)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def ensemble_accuracy(logits: list[np.ndarray], labels: np.ndarray) -> float:
    """VIP §III-D: the class of highest average probability over the students."""
    from vip_ray.core.aggregation import softmax, vip_aggregate

    probs = np.stack([softmax(np.asarray(lg, dtype=np.float64), axis=-1) for lg in logits], axis=1)
    return float((vip_aggregate(probs).argmax(1) == labels).mean())


def collect(jobs: list[Job], cache: Path, labels: np.ndarray) -> tuple[list[dict], dict]:
    """Per-member accuracies (rows of vip_table_members.csv) and per (seed, strategy, kd) ensemble accuracy."""
    import torch

    members, ensembles = [], {}
    for j in jobs:
        if j.kind == "teacher_cycle":
            continue  # T is the teacher after its last cycle
        out = torch.load(cache / f"{j.key}.pt", weights_only=False)
        students = []
        for mid, lg in out["logits"].items():
            role = out["roles"][mid]
            acc = float((np.asarray(lg).argmax(1) == labels).mean())
            label = "T" if role == "teacher" else ("B" if role == "baseline" else "student")
            members.append({"seed": j.seed, "strategy": j.strategy if label == "student" else "",
                            "kd": "" if label == "T" else ("yes" if out["kd"][mid] else "no"),
                            "member": mid, "role": label, "accuracy_pct": round(100 * acc, 3)})
            if label == "student":
                students.append(lg)
        if students:
            ensembles[(j.seed, j.strategy, j.kd)] = (100 * ensemble_accuracy(students, labels), len(students))
    return members, ensembles


def teacher_check(members: list[dict]) -> list[dict]:
    """Per seed: does T beat every student and B (KD or not) on the test split, and by how much."""
    rows = []
    for seed in sorted({m["seed"] for m in members}):
        mine = [m for m in members if m["seed"] == seed]
        teacher = [m for m in mine if m["role"] == "T"]
        others = [m for m in mine if m["role"] != "T"]
        if len(teacher) != 1 or not others:
            raise ValueError(f"seed {seed}: need one teacher and at least one student to compare")
        best = max(others, key=lambda m: m["accuracy_pct"])
        t = teacher[0]["accuracy_pct"]
        rows.append({"seed": seed, "teacher_pct": t, "best_student_pct": best["accuracy_pct"],
                     "best_student": best["member"], "margin_points": round(t - best["accuracy_pct"], 3),
                     "teacher_beats_all": bool(t > best["accuracy_pct"])})
    return rows


def summarize(members: list[dict], ensembles: dict, strategies: list[str]) -> list[dict]:
    """The comparison table: accuracies (% top-1) and KD's gains (points), each mean ± 95 % CI over
    seeds; the share of the B→T gap the ensemble closes, (mean E − mean B) / (mean T − mean B) with
    B of the same KD setting (per-seed ratios listed, no CI)."""
    seeds = sorted({m["seed"] for m in members})
    rows: list[dict] = []

    def acc(seed, role, strategy="", kd=""):
        return [m["accuracy_pct"] for m in members
                if m["seed"] == seed and m["role"] == role and m["strategy"] == strategy and m["kd"] == kd]

    def add(row, per_seed, unit, strategy="", kd="", n_members=""):
        mean, half = ci95(per_seed)
        rows.append({"row": row, "strategy": strategy, "kd": kd, "members": n_members, "seeds": len(per_seed),
                     "mean": round(mean, 3), "ci95": round(half, 3), "unit": unit,
                     "per_seed": ";".join(f"{v:.3f}" for v in per_seed)})

    teacher = [acc(s, "T")[0] for s in seeds]
    baseline = {kd: [acc(s, "B", kd=kd)[0] for s in seeds] for kd in ("yes", "no")}
    add("T", teacher, "% top-1", n_members=1)
    for kd in ("yes", "no"):
        add("B", baseline[kd], "% top-1", kd=kd, n_members=1)
    for strategy in strategies:
        for kd in ("yes", "no"):
            single = [float(np.mean(acc(s, "student", strategy, kd))) for s in seeds]
            best = [float(np.max(acc(s, "student", strategy, kd))) for s in seeds]
            ens = [ensembles[(s, strategy, kd == "yes")][0] for s in seeds]
            n = ensembles[(seeds[0], strategy, kd == "yes")][1]
            add("single", single, "% top-1", strategy, kd, n)
            add("best_single", best, "% top-1", strategy, kd, n)
            add("E", ens, "% top-1", strategy, kd, n)
            # a ratio of means: per seed, T − B is a few test images and its ratio is noise (or ±∞)
            t_b = float(np.mean(teacher)) - float(np.mean(baseline[kd]))
            gap = [100 * (e - b) / (t - b) if t != b else float("nan") for e, b, t in zip(ens, baseline[kd], teacher)]
            rows.append({"row": "gap_closed", "strategy": strategy, "kd": kd, "members": n, "seeds": len(seeds),
                         "mean": round(100 * (float(np.mean(ens)) - float(np.mean(baseline[kd]))) / t_b, 3)
                         if t_b else float("nan"), "ci95": float("nan"), "unit": "% of mean(T) − mean(B)",
                         "per_seed": ";".join(f"{v:.3f}" for v in gap)})
            add("E_minus_B", [e - b for e, b in zip(ens, baseline[kd])], "points", strategy, kd, n)
        kd_e = [ensembles[(s, strategy, True)][0] - ensembles[(s, strategy, False)][0] for s in seeds]
        kd_single = [float(np.mean(acc(s, "student", strategy, "yes")) - np.mean(acc(s, "student", strategy, "no")))
                     for s in seeds]
        add("kd_gain_E", kd_e, "points", strategy)
        add("kd_gain_single", kd_single, "points", strategy)
    add("kd_gain_B", [a - b for a, b in zip(baseline["yes"], baseline["no"])], "points")
    add("teacher_margin", [r["margin_points"] for r in teacher_check(members)], "points")
    return rows


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})


def _cell(rows, row, strategy="", kd="") -> str:
    r = next((r for r in rows if r["row"] == row and r["strategy"] == strategy and r["kd"] == kd), None)
    if r is None:
        return "–"
    return f"{r['mean']:.2f} ± {r['ci95']:.2f}" if np.isfinite(r["ci95"]) else f"{r['mean']:.2f}"


def markdown(rows: list[dict], strategies: list[str], student: str = "s3") -> str:
    lines = [("| models | KD | single student (mean) | best student | ensemble E | E − B (points) | "
              "B→T gap closed by E | KD gain of E (points) |"),
             "|---|---|---|---|---|---|---|---|",
             f"| T (ResNet50 teacher) | – | {_cell(rows, 'T')} | | | | | |"]
    for kd in ("yes", "no"):
        lines.append(f"| B (plain {student}) | {kd} | {_cell(rows, 'B', kd=kd)} | | | | | "
                     f"{_cell(rows, 'kd_gain_B') if kd == 'yes' else ''} |")
    for s in strategies:
        n = next(r["members"] for r in rows if r["row"] == "E" and r["strategy"] == s)
        for kd in ("yes", "no"):
            lines.append(f"| {s} ({n} × {student}) | {kd} | {_cell(rows, 'single', s, kd)} | {_cell(rows, 'best_single', s, kd)} "
                         f"| {_cell(rows, 'E', s, kd)} | {_cell(rows, 'E_minus_B', s, kd)} "
                         f"| {_cell(rows, 'gap_closed', s, kd)} % | "
                         f"{_cell(rows, 'kd_gain_E', s) if kd == 'yes' else ''} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], strategies: list[str], path: Path, title: str, student: str = "s3") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def get(row, strategy="", kd=""):
        r = next(r for r in rows if r["row"] == row and r["strategy"] == strategy and r["kd"] == kd)
        return r["mean"], (r["ci95"] if np.isfinite(r["ci95"]) else 0.0)

    fig, ax = plt.subplots(figsize=(10, 4.8))
    bars = [("single", "no", "single student, no KD", "#9ecae1"), ("single", "yes", "single student, KD", "#3182bd"),
            ("E", "no", "ensemble E, no KD", "#fdae6b"), ("E", "yes", "ensemble E, KD", "#e6550d")]
    width = 0.2
    x = np.arange(len(strategies))
    lows = []
    for i, (row, kd, label, color) in enumerate(bars):
        vals = [get(row, s, kd) for s in strategies]
        ax.bar(x + (i - 1.5) * width, [v[0] for v in vals], width, yerr=[v[1] for v in vals], capsize=3,
               label=label, color=color)
        lows += [v[0] - v[1] for v in vals]
    for row, kd, label, style in (("T", "", "T (ResNet50 teacher)", "-"), ("B", "yes", f"B (plain {student}), KD", "--"),
                                  ("B", "no", f"B (plain {student}), no KD", ":")):
        mean, half = get(row, kd=kd)
        ax.axhline(mean, color="black", linestyle=style, linewidth=1.2, label=f"{label}: {mean:.2f} %")
        ax.axhspan(mean - half, mean + half, color="grey", alpha=0.12)
        lows.append(mean - half)
    ax.set_xticks(x, strategies)
    ax.set_xlabel(f"diversity strategy (homogeneous ensemble of {student} students)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_ylim(max(0.0, min(lows) - 1.0), 100.0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vip_ray.bench.vip_table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (300 images, 16 px, 2 students, 1 epoch): "
                                                        "a smoke test of the pipeline, not figures")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="global seeds (default 0 1 2; >= 2 for CIs)")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), help=f"of {', '.join(STRATEGIES)}")
    p.add_argument("--workers", type=int, default=2, help="training processes, one torch thread each")
    p.add_argument("--out-dir", default="results/bench", help="where the CSVs, the plot and the cache go")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a Tune config override for every training, e.g. --set shape.n=5 (repeatable)")
    args = p.parse_args(argv)
    args.seeds = args.seeds if args.seeds is not None else ([0, 1] if args.quick else [0, 1, 2])
    bad = [s for s in args.strategies if s not in STRATEGIES]
    if bad or not args.strategies or len(set(args.strategies)) != len(args.strategies):
        raise BenchError(f"--strategies: {' '.join(args.strategies)!r} is not allowed; allowed: distinct names "
                         f"of {', '.join(STRATEGIES)}")
    if len(args.seeds) < 2 or len(set(args.seeds)) != len(args.seeds):
        raise BenchError(f"--seeds: {args.seeds} is not allowed; allowed: at least 2 distinct integers "
                         f"(a 95 % CI needs 2 or more)")
    if args.workers < 1:
        raise BenchError(f"--workers: {args.workers} is not allowed; allowed: an integer >= 1")
    bad_sets = [o for o in args.overrides if "=" not in o]
    if bad_sets:
        raise BenchError(f"--set: {bad_sets[0]!r} is not KEY=VALUE")
    return args


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> int:
    try:
        args = parse(argv)
        overrides = [*(QUICK_OVERRIDES if args.quick else ()), *args.overrides]
        from vip_ray.data import DataError
        from vip_ray.tune.config import ConfigCompositionError
        from vip_ray.tune.plan import ConfigError

        try:
            jobs = plan_jobs(args.seeds, args.strategies, overrides)
        except (ConfigCompositionError, ConfigError, DataError) as e:
            raise BenchError(f"--set: {e}") from None
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from vip_ray.data import load_dataset

    out = Path(args.out_dir)
    cache = out / "vip_table_cache"
    t0 = time.perf_counter()
    run_jobs(jobs, cache, args.workers, log)
    cfg = compose_strategy(args.strategies[0], args.seeds[0], overrides)
    data = load_dataset(cfg["data"])
    members, ensembles = collect(jobs, cache, data.test_y.numpy())
    rows = summarize(members, ensembles, args.strategies)
    checks = teacher_check(members)
    write_csv(out / "vip_table.csv", rows, TABLE_COLUMNS)
    write_csv(out / "vip_table_members.csv", members, MEMBER_COLUMNS)
    write_csv(out / "vip_table_teacher.csv", checks, TEACHER_COLUMNS)
    student = next(m["model"] for j in jobs if j.kind == "students" for m in j.group["members"])
    student = student.removeprefix("resnet50_")
    (out / "vip_table.md").write_text(markdown(rows, args.strategies, student))
    title = (f"VIP on {data.name} ({len(data.train_y)} train / {len(data.test_y)} test), "
             f"{len(args.seeds)} seeds, mean ± 95 % CI" + (" — QUICK smoke test" if args.quick else ""))
    plot(rows, args.strategies, out / "vip_table.png", title, student)
    log(markdown(rows, args.strategies, student))
    beaten = sum(r["teacher_beats_all"] for r in checks)
    log(f"[vip_table] teacher beats every student on {beaten} of {len(checks)} seed(s); margins (points): "
        + ", ".join(f"seed {r['seed']}: {r['margin_points']:+.2f} vs {r['best_student']}" for r in checks))
    log(f"[vip_table] wrote {out}/vip_table.{{csv,md,png}}, vip_table_members.csv, vip_table_teacher.csv "
        f"({time.perf_counter() - t0:.0f} s; {date.today().isoformat()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
