"""Train a group of pool members on shared data pipelines.

A *group* is what one Tune trial trains: one member (``train.mode=per_variant``) or
several (``joint``, VP §IV-B). A class-parallel member (``classes`` set) learns its classes
plus "other" with class-weighted cross-entropy and returns bank rows in the full class space;
a member with a ``holdout`` (the CP probe) trains without its validation share and also
returns its predictions there. Members whose training subsets agree (same imbalance
group) share one shuffled batch stream; members without input filters also share one
teacher forward per batch. Everything a trial needs travels in a plain-dict config,
so the same function runs inside a Tune trial and in-process (benchmarks).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vip_ray.class_groups import (
    class_weights,
    cp_log_probs,
    group_targets,
    validation_indices,
)
from vip_ray.data import DataSplit, load_dataset
from vip_ray.diversity import Recipe, apply_filters, imbalance_indices
from vip_ray.models import VariantNet, build_model
from vip_ray.training.augment import random_shift
from vip_ray.training.losses import kd_loss

ReportFn = Callable[[dict[str, Any], dict[str, Any] | None], None]


@dataclass
class _Pipeline:
    """One shuffled stream over one training subset, shared by its members."""

    indices: np.ndarray
    member_ids: list[str]
    generator: torch.Generator


@dataclass
class GroupState:
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: dict[str, float] = field(default_factory=dict)
    images_seen: dict[str, int] = field(default_factory=dict)
    teacher_seconds: float = 0.0


def build_member(member: dict[str, Any], teacher: VariantNet | None = None) -> VariantNet:
    """A member's network; VIP students start from the teacher's weights."""
    init = teacher if member.get("init_from_teacher") else None
    return build_model(member["model"], **member["build"], teacher=init,
                       pretrained=member.get("pretrained", "never"))


def load_teacher(teacher: dict[str, Any] | None, device: torch.device) -> VariantNet | None:
    """The frozen teacher of a trial, from the weights file the teacher stage wrote."""
    if not teacher:
        return None
    model = build_model(teacher["model"], **teacher["build"], pretrained="never")
    model.load_state_dict(torch.load(teacher["weights_path"], map_location="cpu", weights_only=True))
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _phase_at(phases: list[dict[str, Any]], epoch: int) -> tuple[int, dict[str, Any]]:
    start = 0
    for i, ph in enumerate(phases):
        if epoch < start + int(ph["epochs"]):
            return i, ph
        start += int(ph["epochs"])
    raise IndexError(epoch)


def _configure_phase(models: dict[str, VariantNet], phase: dict[str, Any]) -> dict[str, torch.optim.Optimizer]:
    opts = {}
    for mid, m in models.items():
        frozen = bool(phase.get("freeze_backbone", False))
        for p in m.backbone_parameters():
            p.requires_grad_(not frozen)
        for p in m.head_parameters():
            p.requires_grad_(True)
        params = [p for p in m.parameters() if p.requires_grad]
        opts[mid] = torch.optim.Adam(params, lr=float(phase["lr"]))
    return opts


def _phase_lr(phases: list[dict[str, Any]], epoch: int) -> float:
    """Learning rate of ``epoch``: constant, or cosine-annealed over the phase (``schedule: cosine``).

    A function of the epoch alone, so a resumed trial continues on the same schedule."""
    pidx, phase = _phase_at(phases, epoch)
    lr = float(phase["lr"])
    if phase.get("schedule", "constant") == "constant":
        return lr
    start = sum(int(p["epochs"]) for p in phases[:pidx])
    frac = (epoch - start) / max(1, int(phase["epochs"]))
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def _set_train_mode(models: dict[str, VariantNet], phase: dict[str, Any]) -> None:
    for m in models.values():
        m.train()
        if phase.get("freeze_backbone", False):
            m.backbone.eval()  # frozen backbone keeps its BN statistics too (as Keras does)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, data: DataSplit, device: torch.device, batch_size: int = 256,
                   split: str = "test", indices: np.ndarray | None = None) -> np.ndarray:
    model.eval()
    out = [model(x.to(device)).float().cpu()
           for x, _ in data.batches(split, batch_size, shuffle=False, indices=indices)]
    return torch.cat(out).numpy()


@dataclass
class _GroupTask:
    """A class-parallel member: |g| + 1 outputs (its classes, then "other"), weighted CE."""

    classes: list[int]
    num_classes: int
    weights: np.ndarray  # loss weight per output
    init: str            # "probe" (started from the probe's weights) or "scratch"

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = torch.as_tensor(self.weights, dtype=logits.dtype, device=logits.device)
        return F.cross_entropy(logits, group_targets(y, self.classes, self.num_classes), weight=w)

    def accuracy(self, logits: np.ndarray, labels: np.ndarray) -> float:
        return float((logits.argmax(1) == group_targets(labels, self.classes, self.num_classes)).mean())


def _init_from(model: VariantNet, weights_path: str) -> None:
    """Start from another trained model of the same architecture (the CP probe): every weight
    but the head's, which has a different number of outputs."""
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    take = {k: v for k, v in state.items() if not k.startswith("head.") and k in own and own[k].shape == v.shape}
    left = sorted(k for k in own if k not in take and not k.startswith("head."))
    if left:
        raise ValueError(f"{weights_path}: no matching weights for {left[:3]}{' …' if len(left) > 3 else ''}; "
                         f"a group model starts from a probe of the same architecture")
    model.load_state_dict(take, strict=False)


def _calibrate(model: VariantNet, weights: np.ndarray) -> None:
    """Shift the head's output bias by −log w: a model trained with class weights w estimates
    p(k|x)·w_k, so this makes its softmax the posterior under the true class frequencies again
    (scores of different group models stay comparable)."""
    last = [m for m in model.head.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    if not last or last[-1].bias is None:
        raise ValueError(f"{model.meta.get('name')}: no output layer with a bias to calibrate")
    with torch.no_grad():
        last[-1].bias -= torch.as_tensor(np.log(weights), dtype=last[-1].bias.dtype, device=last[-1].bias.device)


@contextmanager
def cpu_determinism(threads: int, deterministic: bool = True):
    """Fix what decides a CPU training's bits on one machine: torch's intra-op thread count and
    deterministic algorithms (``torch.use_deterministic_algorithms``); the caller's settings
    come back afterwards. Seeds are the trainer's business (every member, batch stream and
    filter draw has its own). What this cannot fix is the CPU itself: oneDNN and MKL pick
    kernels by instruction set, so another machine may round differently (README,
    "Reproducibility")."""
    threads_before, deterministic_before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(max(1, int(threads)))
    torch.use_deterministic_algorithms(bool(deterministic))
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(deterministic_before)


def train_group(
    config: dict[str, Any],
    *,
    report: ReportFn | None = None,
    restore: dict[str, Any] | None = None,
    data: DataSplit | None = None,
) -> dict[str, Any]:
    """Train every member of ``config["members"]``; return final weights, test logits and stats.

    ``report(metrics, checkpoint_state)`` is called after every epoch; ``restore`` is such a
    checkpoint state, to continue an interrupted trial exactly where it stopped. Runs with
    ``config["threads"]`` torch threads (default 1) and, unless ``config["deterministic"]`` is
    false, deterministic algorithms.
    """
    with cpu_determinism(int(config.get("threads", 1)), bool(config.get("deterministic", True))):
        return _train_group(config, report=report, restore=restore, data=data)


def _train_group(
    config: dict[str, Any],
    *,
    report: ReportFn | None,
    restore: dict[str, Any] | None,
    data: DataSplit | None,
) -> dict[str, Any]:
    device = torch.device("cuda" if config.get("gpu", 0) and torch.cuda.is_available() else "cpu")
    data = data or load_dataset(config["data"])
    tcfg = config["train"]
    phases = config["phases"]
    members = config["members"]
    total_epochs = sum(int(p["epochs"]) for p in phases)

    torch.manual_seed(int(members[0]["seed"]))
    recipes = {m["id"]: Recipe.from_dict(m["recipe"]) for m in members}
    uses_kd = {m["id"]: bool(m["kd"]) for m in members}
    needs_teacher = any(uses_kd.values()) or any(m.get("init_from_teacher") for m in members)
    teacher = load_teacher(config.get("teacher"), device) if needs_teacher else None
    models = {m["id"]: build_member(m, teacher).to(device) for m in members}
    for m in members:
        if m.get("init_from"):
            _init_from(models[m["id"]], m["init_from"])
        if m.get("start_from"):  # continue a model trained before (all weights, head included)
            models[m["id"]].load_state_dict(torch.load(m["start_from"], map_location="cpu", weights_only=True))

    labels = data.train_y.numpy()
    pipelines: dict[Any, _Pipeline] = {}
    val_idx: dict[str, np.ndarray] = {}  # members with a holdout (the CP probe): validation positions
    tasks: dict[str, _GroupTask] = {}     # class-parallel members
    for m in members:
        r = recipes[m["id"]]
        key = r.imbalance_group
        if m.get("holdout"):
            fit, val_idx[m["id"]] = validation_indices(labels, m["holdout"]["fraction"], m["holdout"]["seed"])
            key = ("holdout", m["holdout"]["fraction"], m["holdout"]["seed"])
        if key not in pipelines:
            if key is None:
                idx = np.arange(len(labels))
            elif m.get("holdout"):
                idx = fit
            else:
                idx = imbalance_indices(labels, r, data.num_classes, seed=int(m["seed"]))
            pipelines[key] = _Pipeline(idx, [], torch.Generator().manual_seed(int(m["seed"])))
        pipelines[key].member_ids.append(m["id"])
        if m.get("role") == "cp_group" and m.get("classes") is None:
            raise ValueError(f"{m['id']}: a class-parallel member needs its classes before training")
        if m.get("classes") is not None:
            targets = group_targets(labels[pipelines[key].indices], m["classes"], data.num_classes)
            weights = class_weights(targets, len(m["classes"]) + 1, m.get("other_weight", "balanced"))
            tasks[m["id"]] = _GroupTask(list(m["classes"]), data.num_classes, weights,
                                        "probe" if m.get("init_from") else "scratch")
    filter_gens = {mid: torch.Generator().manual_seed(int(m["seed"]) + 1) for mid, m in
                   ((m["id"], m) for m in members)}

    state = GroupState(train_seconds={k: 0.0 for k in models}, images_seen={k: 0 for k in models})
    opts: dict[str, torch.optim.Optimizer] = {}
    current_phase = -1
    if restore:
        state = restore["state"]
        for mid, sd in restore["models"].items():
            models[mid].load_state_dict(sd)
        for key, g in restore["generators"].items():
            (pipelines[key].generator if key in pipelines else filter_gens[key]).set_state(g)
        torch.set_rng_state(restore["torch_rng"])
        if state.epoch < total_epochs and _phase_at(phases, state.epoch)[0] == restore["opt_phase"]:
            current_phase, phase = _phase_at(phases, state.epoch)  # mid-phase: continue its optimizer
            opts = _configure_phase(models, phase)
            for mid, sd in restore["opts"].items():
                opts[mid].load_state_dict(sd)

    batch_size = int(tcfg["batch_size"])
    teacher_logits = torch.zeros(len(labels), data.num_classes)  # by training-image position
    teacher_known = torch.zeros(len(labels), dtype=torch.bool)
    last_logits: dict[str, np.ndarray] = {}  # the final epoch's evaluation is the prediction bank
    while state.epoch < total_epochs:
        pidx, phase = _phase_at(phases, state.epoch)
        if pidx != current_phase:
            opts, current_phase = _configure_phase(models, phase), pidx
        _set_train_mode(models, phase)
        for opt in opts.values():
            for group in opt.param_groups:
                group["lr"] = _phase_lr(phases, state.epoch)
        losses = {mid: [] for mid in models}
        shift_px = int(phase.get("shift_px", 0))
        for pipe in pipelines.values():
            # the same permutation DataSplit.batches(shuffle=True) draws, kept to know each batch's samples
            order = torch.as_tensor(pipe.indices, dtype=torch.long)[
                torch.randperm(len(pipe.indices), generator=pipe.generator)]
            batches = data.batches("train", batch_size, shuffle=False, indices=order)
            for start, (x, y) in zip(range(0, len(order), batch_size), batches):
                x, y = x.to(device), y.to(device)
                batch_idx = order[start:start + batch_size]
                for mid in pipe.member_ids:
                    r = recipes[mid]
                    t0 = time.perf_counter()
                    xin = apply_filters(x, r.filters, filter_gens[mid]) if r.filters else x
                    if shift_px:
                        xin = random_shift(xin, shift_px, filter_gens[mid])
                    augmented = bool(r.filters) or shift_px > 0
                    t_logits = None
                    if teacher is not None and uses_kd[mid]:
                        # the frozen teacher (eval mode) answers each plain training image the same way
                        # every time, so its logits are computed once per image for all members and
                        # epochs; filtered or shifted inputs are drawn per member and need their own
                        if augmented or not bool(teacher_known[batch_idx].all()):
                            tt = time.perf_counter()
                            with torch.no_grad():
                                t_logits = teacher(xin)
                            state.teacher_seconds += time.perf_counter() - tt
                            if not augmented:
                                teacher_logits[batch_idx] = t_logits.float().cpu()
                                teacher_known[batch_idx] = True
                        else:
                            t_logits = teacher_logits[batch_idx].to(device)
                    if mid in tasks:
                        loss = tasks[mid].loss(models[mid](xin), y)
                    else:
                        loss = kd_loss(models[mid](xin), y, t_logits,
                                       alpha=float(tcfg["alpha"]), temperature=float(tcfg["temperature"]))
                    opts[mid].zero_grad(set_to_none=True)
                    loss.backward()
                    opts[mid].step()
                    state.train_seconds[mid] += time.perf_counter() - t0
                    state.images_seen[mid] += len(y)
                    losses[mid].append(loss.item())
        state.epoch += 1
        accs = {}
        if state.epoch == total_epochs or state.epoch % max(1, int(tcfg.get("eval_every", 1))) == 0:
            for mid, m in models.items():
                last_logits[mid] = predict_logits(m, data, device)
                if mid in tasks:  # CP: accuracy of the |g|+1-way decision (calibrated as it will be)
                    accs[mid] = tasks[mid].accuracy(last_logits[mid] - np.log(tasks[mid].weights), data.test_y.numpy())
                else:
                    accs[mid] = float((last_logits[mid].argmax(1) == data.test_y.numpy()).mean())
        row = {"epoch": state.epoch, "phase": phase["name"],
               "loss": float(np.mean([np.mean(v) for v in losses.values()])),
               **{f"acc/{k}": v for k, v in accs.items()}}
        if accs:
            row["mean_test_acc"] = float(np.mean(list(accs.values())))
        state.history.append(row)
        if report is not None:
            ckpt = {
                "state": state,
                "models": {k: m.state_dict() for k, m in models.items()},
                "opts": {k: o.state_dict() for k, o in opts.items()},
                "opt_phase": current_phase,
                "generators": {**{k: p.generator.get_state() for k, p in pipelines.items()},
                               **{k: g.get_state() for k, g in filter_gens.items()}},
                "torch_rng": torch.get_rng_state(),
            }
            report(row, ckpt)

    result = {"weights": {}, "logits": {}, "stats": {}, "history": state.history, "val": {}}
    for mid, m in models.items():
        if mid in tasks:  # CP: calibrated weights; bank rows in the full class space
            _calibrate(m, tasks[mid].weights)
            last_logits[mid] = cp_log_probs(predict_logits(m, data, device), tasks[mid].classes, data.num_classes)
        if mid in val_idx:  # the probe's predictions on its held-out validation positions (never test)
            result["val"][mid] = {"logits": predict_logits(m, data, device, split="train", indices=val_idx[mid]),
                                  "labels": labels[val_idx[mid]], "indices": val_idx[mid]}
        result["weights"][mid] = {k: v.detach().cpu() for k, v in m.state_dict().items()}
        result["logits"][mid] = last_logits[mid] if mid in last_logits else predict_logits(m, data, device)
        secs = state.train_seconds[mid]
        result["stats"][mid] = {
            "epochs": total_epochs,
            "train_seconds": round(secs, 3),
            "images_per_s": round(state.images_seen[mid] / secs, 1) if secs > 0 else None,
            "pretrained": m.meta.get("pretrained"),
            "finished_at": round(time.time(), 3),  # wall clock: shows a resumed run did not retrain it
        }
        if mid in tasks:
            result["stats"][mid]["class_weights"] = [round(float(w), 6) for w in tasks[mid].weights]
            result["stats"][mid]["init"] = tasks[mid].init
    result["teacher_seconds"] = round(state.teacher_seconds, 3)
    result["fingerprint"] = data.fingerprint()
    return result
