"""The pool report: what a pool's prediction bank says about its members and ensembles.

Every ensemble number goes through :mod:`vip_ray.core.aggregation`, the same code the
simulator and the Serve emulation use.
"""
from __future__ import annotations

from vip_ray.core.tables import top_m  # noqa: F401  (re-exported: the pools report uses it)

import itertools
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vip_ray.core.aggregation import cp_aggregate, softmax, vip_aggregate, vp_aggregate
from vip_ray.class_groups import group_log_probs, group_targets
from vip_ray.models import model_spec
from vip_ray.pool.store import Pool

KS: tuple[int | None, ...] = (1, 2, 5, None)  # None = the whole vector ("all")


def _acc(probs: np.ndarray, labels: np.ndarray, m: int = 1) -> float:
    top = np.argsort(-probs, axis=1, kind="stable")[:, :m]
    return float((top == labels[:, None]).any(1).mean())




def ensemble_accuracy(pool: Pool, ids: Sequence[str], *, method: str, k: int | None = 2,
                      alpha: float = 1.0) -> dict[str, float]:
    labels = pool.labels
    probs = softmax(pool.logits(list(ids)).astype(np.float64), axis=-1).transpose(1, 0, 2)  # (N, V, C)
    if method == "vp":
        recs = [pool.manifest.member(i) for i in ids]
        agg = vp_aggregate(probs, k=k, rho=[r.input_size for r in recs],
                           depth=[r.width for r in recs], alpha=alpha)
    else:
        agg = vip_aggregate(probs)
    m = top_m(pool.num_classes)
    return {"top1": _acc(agg, labels), f"top{m}": _acc(agg, labels, m)}


def cp_ensemble_accuracy(pool: Pool, ids: Sequence[str] | None = None) -> dict[str, float]:
    """Class parallelism with every group answering: ``cp_aggregate`` over the groups' bank rows."""
    ids = list(pool.manifest.ids("cp_group") if ids is None else ids)
    probs = softmax(pool.logits(ids).astype(np.float64), axis=-1).transpose(1, 0, 2)  # (N, G, C)
    agg = cp_aggregate(probs, classes=pool.class_masks(ids))
    m = top_m(pool.num_classes)
    return {"top1": _acc(agg, pool.labels), f"top{m}": _acc(agg, pool.labels, m)}


def cp_section(pool: Pool) -> dict[str, Any] | None:
    """A class-parallel pool's figures: per group its (|g|+1)-way accuracy, on its own classes
    (in-group) and on the rest ("other" recognised), and the CP ensemble; None without groups."""
    ids = pool.manifest.ids("cp_group")
    if not ids:
        return None
    groups = []
    for mid, rows in zip(ids, pool.logits(ids)):
        rec = pool.manifest.member(mid)
        pred = group_log_probs(rows, rec.classes).argmax(-1)
        target = group_targets(pool.labels, rec.classes, pool.num_classes)
        inside = target < len(rec.classes)
        groups.append({"id": mid, "classes": rec.classes, "group_top1": float((pred == target).mean()),
                       "in_group": float((pred[inside] == target[inside]).mean()),
                       "other": float((pred[~inside] == target[~inside]).mean()),
                       "macs": rec.macs, "params": rec.params})
    info = pool.manifest.config.get("class_parallel", {})
    return {"members": ids, "grouping": info.get("grouping"), "init": info.get("init"), "groups": groups,
            "probe_val_accuracy": info.get("probe", {}).get("val_accuracy"),
            "ensemble": cp_ensemble_accuracy(pool, ids)}


def disagreement(pool: Pool, ids: Sequence[str]) -> np.ndarray:
    """Pairwise fraction of test samples on which two members' top-1 labels differ."""
    preds = pool.logits(list(ids)).argmax(-1)
    v = len(ids)
    out = np.zeros((v, v))
    for i, j in itertools.combinations(range(v), 2):
        out[i, j] = out[j, i] = float((preds[i] != preds[j]).mean())
    return out


def _ensemble_sets(pool: Pool) -> dict[str, list[str]]:
    variants = [m for m in pool.members if m.role == "variant"]
    kd_flags = {m.kd for m in variants}
    if len(kd_flags) == 2:
        return {"kd": [m.id for m in variants if m.kd], "no-kd": [m.id for m in variants if not m.kd]}
    return {"kd" if kd_flags == {True} else "all": [m.id for m in variants]}


def pool_report(pool: Pool, *, alpha: float = 1.0) -> dict[str, Any]:
    labels = pool.labels
    m = top_m(pool.num_classes)
    members = []
    for rec, logits in zip(pool.members, pool.logits()):
        members.append({"id": rec.id, "role": rec.role, "model": rec.model, "segment": rec.segment,
                        "recipe": rec.recipe.get("name"), "kd": rec.kd, "input_size": rec.input_size,
                        "params": rec.params, "macs": rec.macs, "top1": _acc(logits, labels),
                        f"top{m}": _acc(logits, labels, m)})
    cp = cp_section(pool)
    method = "cp" if cp else "vp" if pool.manifest.family.startswith("vp") else "vip"
    ensembles = {}
    for set_name, ids in _ensemble_sets(pool).items():
        if not ids:
            continue
        ens = {"members": ids, "vip_average": ensemble_accuracy(pool, ids, method="vip"),
               "vp_topk": {("all" if k is None else str(k)): ensemble_accuracy(pool, ids, method="vp", k=k, alpha=alpha)
                           for k in KS}}
        d = disagreement(pool, ids)
        ens["disagreement_mean"] = float(d[np.triu_indices(len(ids), 1)].mean()) if len(ids) > 1 else 0.0
        ens["disagreement"] = d.round(4).tolist()
        ensembles[set_name] = ens
    by_role = {r: [x for x in members if x["role"] == r] for r in ("teacher", "baseline")}
    main_set = "kd" if "kd" in ensembles else next(iter(ensembles), None)
    bet = {}
    if main_set:
        ens = ensembles[main_set]
        bet["E"] = ens["vp_topk"]["2"]["top1"] if method == "vp" else ens["vip_average"]["top1"]
        # B: the plain same-size variant of a homogeneous pool (VIP), else the family's baseline (VP)
        b = [x for x in by_role["baseline"] if ".B" in x["id"] and x["kd"] == (main_set == "kd")] \
            or by_role["baseline"]
        if b:
            bet["B"] = b[0]["top1"]
        if by_role["teacher"]:
            bet["T"] = by_role["teacher"][0]["top1"]
    elif cp:  # the CP "ensemble": every group answers, the owner's score decides
        bet["E"] = cp["ensemble"]["top1"]
        if by_role["baseline"]:
            bet["B"] = by_role["baseline"][0]["top1"]
    kd_pairs = []
    if {"kd", "no-kd"} <= set(ensembles):
        acc = {x["id"]: x["top1"] for x in members}
        for x in members:
            if x["role"] == "variant" and x["id"].endswith(".kd"):
                twin = x["id"][: -len(".kd")] + ".nokd"
                if twin in acc:
                    kd_pairs.append({"variant": x["id"][: -len(".kd")], "kd": acc[x["id"]], "no_kd": acc[twin]})
    return {
        "pool": pool.name, "family": pool.manifest.family, "shape": pool.manifest.shape,
        "diversity": pool.manifest.diversity, "data": pool.manifest.data["name"],
        "n_test": int(len(labels)), "num_classes": pool.num_classes, "alpha": alpha, "method": method,
        "members": members, "ensembles": ensembles, "cp": cp, "bet": bet, "kd_vs_no_kd": kd_pairs,
        "teacher_pretrained": [x.train.get("pretrained") for x in pool.members if x.role == "teacher"],
        # where ImageNet weights could apply (teachers, full baselines); students start from the teacher
        "pretrained": {x.id: x.train.get("pretrained") for x in pool.members
                       if model_spec(x.model).kind in ("teacher", "baseline")},
    }


def print_report(pool: Pool, console, *, alpha: float = 1.0, report: dict[str, Any] | None = None) -> dict[str, Any]:
    from rich.table import Table

    rep = report or pool_report(pool, alpha=alpha)
    m = top_m(pool.num_classes)
    t = Table(title=f"pool {rep['pool']} — {rep['family']}, {rep['shape']}, diversity={rep['diversity']}, "
                    f"data={rep['data']} ({rep['n_test']} test samples)")
    for col in ("member", "role", "recipe", "KD", "ρ", "params", "MACs", "top-1", f"top-{m}"):
        t.add_column(col, justify="right" if col in ("ρ", "params", "MACs", "top-1", f"top-{m}") else "left",
                     overflow="fold")
    for x in rep["members"]:
        # a group model's bank top-1 over all C classes means little; the CP table has its figures
        acc = ("—", "—") if x["role"] == "cp_group" else (f"{x['top1']:.2%}", f"{x[f'top{m}']:.2%}")
        t.add_row(x["id"], x["role"], str(x["recipe"]), "yes" if x["kd"] else "no", str(x["input_size"]),
                  f"{x['params'] / 1e3:,.0f}K", f"{x['macs'] / 1e6:,.1f}M", *acc)
    console.print(t)
    if rep.get("cp"):
        cp = rep["cp"]
        start = {"probe": ", started from the probe", "scratch": ", from scratch"}.get(cp.get("init"), "")
        g = Table(title=f"class parallelism: {len(cp['groups'])} groups by {cp['grouping']}{start} "
                        f"(|g|+1-way: the group's classes + other)")
        for col in ("group model", "classes", "top-1 (|g|+1-way)", "in-group", "other"):
            g.add_column(col, justify="left" if col in ("group model", "classes") else "right")
        for x in cp["groups"]:
            g.add_row(x["id"], ",".join(map(str, x["classes"])), f"{x['group_top1']:.2%}", f"{x['in_group']:.2%}",
                      f"{x['other']:.2%}")
        console.print(g)
        console.print(f"CP ensemble (every group answers; the owner's score decides): "
                      f"top-1 {cp['ensemble']['top1']:.2%}, top-{m} {cp['ensemble'][f'top{m}']:.2%}")
    for name, ens in rep["ensembles"].items():
        e = Table(title=f"ensemble '{name}' of {len(ens['members'])} variants "
                        f"(mean pairwise disagreement {ens['disagreement_mean']:.2%})")
        e.add_column("aggregation")
        e.add_column("top-1", justify="right")
        e.add_column(f"top-{m}", justify="right")
        e.add_row("VIP average", f"{ens['vip_average']['top1']:.2%}", f"{ens['vip_average'][f'top{m}']:.2%}")
        for k, v in ens["vp_topk"].items():
            e.add_row(f"VP scaled top-k, k={k}", f"{v['top1']:.2%}", f"{v[f'top{m}']:.2%}")
        console.print(e)
    if rep["bet"]:
        console.print("B / E / T (baseline, ensemble, teacher): " +
                      ", ".join(f"{k}={v:.2%}" for k, v in rep["bet"].items()))
    if rep["kd_vs_no_kd"]:
        console.print("KD vs no KD: " + ", ".join(f"{p['variant']}: {p['kd']:.2%} vs {p['no_kd']:.2%}"
                                                  for p in rep["kd_vs_no_kd"]))
    for mid, src in rep["pretrained"].items():
        console.print(f"{mid}: {'transfer learning from ' + str(src) if src else 'trained from scratch (no cached torchvision weights)'}")
    return rep


def write_plots(reports: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """VIP Fig. 2 (B/E/T per strategy) and VP Fig. 5 (accuracy vs k) as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(max(4.5, 1.8 * len(reports) + 1.5), 3.4))
    colors = {"B": "#999999", "E": "#1f77b4", "T": "#d62728"}
    width = 0.26
    values = []
    for i, rep in enumerate(reports):
        keys = [k for k in ("B", "E", "T") if k in rep["bet"]]
        for j, key in enumerate(keys):
            x = i + (j - (len(keys) - 1) / 2) * width
            y = 100 * rep["bet"][key]
            values.append(y)
            ax.bar(x, y, width * 0.95, color=colors[key], label=key if key not in ax.get_legend_handles_labels()[1] else None)
            ax.text(x, y, f"{key}\n{y:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(reports)), [r["diversity"] for r in reports])
    ax.set_xlim(-0.7, len(reports) - 0.3)
    ax.set_ylim(max(0.0, min(values, default=0) - 8), 101)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_xlabel("diversity strategy")
    ax.set_title("Baseline / Ensemble / Teacher (VIP Fig. 2)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    paths.append(out / "bet_per_strategy.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    for rep in reports:
        name, ens = next(iter(rep["ensembles"].items()), (None, None))
        if ens is None:
            continue
        m = top_m(rep["num_classes"])
        ks = list(ens["vp_topk"])
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        xs = np.arange(len(ks))
        ax.bar(xs - 0.18, [100 * ens["vp_topk"][k]["top1"] for k in ks], 0.36, label="top-1")
        ax.bar(xs + 0.18, [100 * ens["vp_topk"][k][f"top{m}"] for k in ks], 0.36, label=f"top-{m}")
        ax.set_xticks(xs, [f"k={k}" for k in ks])
        lo = min(min(ens["vp_topk"][k]["top1"] for k in ks), 1.0) * 100
        ax.set_ylim(max(0, lo - 5), 100)
        ax.set_ylabel("ensemble accuracy (%)")
        ax.set_title(f"{rep['pool']}: VP aggregation vs k")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / f"{rep['pool']}_accuracy_vs_k.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
