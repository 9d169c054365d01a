"""From a resolved training config to the members of a pool and the trials that train them.

Pure functions over plain dicts (no Ray here), so a plan can be tested and printed.
"""
from __future__ import annotations

from vip_ray.errors import UserError

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from vip_ray.class_groups import GROUPINGS, balanced_groups, group_sizes
from vip_ray.diversity import Recipe, build_recipes, variant_seed
from vip_ray.models import list_models, model_spec


class ConfigError(UserError, ValueError):
    """A training config that cannot be planned; the message names the key."""


@dataclass
class Stage:
    name: str
    groups: list[list[dict[str, Any]]]  # each inner list: the members one trial trains
    phases: list[dict[str, Any]]


@dataclass
class Plan:
    name: str
    members: list[dict[str, Any]]
    stages: list[Stage]
    teacher_id: str | None
    settings: dict[str, Any]  # what else decides the result: data (less its root), train, seed

    def digest(self) -> str:
        """Identity of what will be trained: a resumed run or a reused pool must have the same one."""
        blob = json.dumps([self.members, [(s.name, [[m["id"] for m in g] for g in s.groups], s.phases)
                                          for s in self.stages], self.settings], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_pool_name(cfg: dict[str, Any]) -> str:
    return f"{cfg['family']['name']}-{cfg['shape']['name']}-{cfg['diversity']['name']}-{cfg['data']['name']}"


def _input_size(model: str, family: dict[str, Any]) -> int:
    if family.get("input_size"):
        return int(family["input_size"])
    return max(8, round(model_spec(model).input_size * float(family.get("input_scale", 1.0))))


def _member(mid: str, role: str, model: str, recipe: Recipe, seed: int, kd: bool,
            family: dict[str, Any], num_classes: int, channels: int, init_from_teacher: bool) -> dict[str, Any]:
    spec = model_spec(model)
    return {
        "id": mid,
        "role": role,
        "model": model,
        "recipe": recipe.to_dict(),
        "seed": seed,
        "kd": kd,
        "init_from_teacher": init_from_teacher,
        "pretrained": family.get("pretrained", "auto") if spec.kind in ("teacher", "baseline") else "never",
        "build": {
            "num_classes": num_classes,
            "in_channels": channels,
            "input_size": _input_size(model, family),
            "crop_reduction": recipe.crop_reduction,
            "crop_position": recipe.crop_position,
            "cut": family.get("cut", "relu") if spec.family == "resnet50_slices" and spec.kind == "variant" else "relu",
        },
    }


CP_INITS = ("probe", "scratch")


def _class_parallel(shape: dict[str, Any], cfg: dict[str, Any], num_classes: int, known: set[str]) -> dict[str, Any]:
    """Validated settings of ``shape=class_parallel`` (sensAI-style class groups, one model each)."""
    groups = shape.get("groups")
    if isinstance(groups, bool) or not isinstance(groups, int) or not 2 <= groups <= num_classes:
        raise ConfigError(f"shape.groups: {groups!r} is not allowed for {num_classes} classes; "
                          f"allowed: an integer in 2..{num_classes}")
    grouping = shape.get("grouping")
    if grouping not in GROUPINGS:
        raise ConfigError(f"shape.grouping: {grouping!r} is not allowed; allowed: {', '.join(GROUPINGS)}")
    model = shape.get("model")
    if model not in known:
        raise ConfigError(f"shape.model: unknown model {model!r}; allowed: {', '.join(sorted(known))}")
    probe_epochs = shape.get("probe_epochs")
    if probe_epochs is not None and (isinstance(probe_epochs, bool) or not isinstance(probe_epochs, int)
                                     or probe_epochs < 1):
        raise ConfigError(f"shape.probe_epochs: {probe_epochs!r} must be null (the family's phases) "
                          f"or an integer >= 1")
    val_fraction = shape.get("val_fraction")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ConfigError(f"shape.val_fraction: {val_fraction!r} must be a number in (0, 1)")
    other = shape.get("other_weight")
    if other != "balanced" and (isinstance(other, bool) or not isinstance(other, (int, float)) or other <= 0):
        raise ConfigError(f"shape.other_weight: {other!r} is not allowed; allowed: balanced, or a number > 0")
    init = shape.get("init", "probe")
    if init not in CP_INITS:
        raise ConfigError(f"shape.init: {init!r} is not allowed; allowed: {', '.join(CP_INITS)}")
    kd = cfg["train"].get("kd", False)
    if kd is not False:
        raise ConfigError(f"train.kd: {kd!r} is not allowed with shape=class_parallel; allowed: false "
                          f"(group models have |g|+1 outputs and train without a teacher)")
    if "imbalance" in (cfg["diversity"].get("strategies") or []):
        raise ConfigError(f"diversity: {cfg['diversity'].get('name')!r} uses class imbalance, which "
                          f"shape=class_parallel's own relabelling replaces; allowed with it: "
                          f"none, filters, crops, filters_crops")
    return {"groups": groups, "grouping": grouping, "model": model, "probe_epochs": probe_epochs, "init": init,
            "val_fraction": float(val_fraction), "other_weight": other if other == "balanced" else float(other),
            "sizes": group_sizes(num_classes, groups),
            "classes": balanced_groups(num_classes, groups) if grouping == "balanced" else None}


def assign_classes(plan: "Plan", groups: list[list[int]]) -> None:
    """Give the plan's cp_group members their classes (in place), e.g. once the probe chose them."""
    members = [m for m in plan.members if m["role"] == "cp_group"]
    sizes = [len(m["classes"]) if m["classes"] is not None else m["build"]["num_classes"] - 1 for m in members]
    if sorted(map(len, groups), reverse=True) != sizes or len(groups) != len(members):
        raise ValueError(f"class groups of sizes {[len(g) for g in groups]} do not fit the planned sizes {sizes}")
    for m, g in zip(members, sorted(groups, key=len, reverse=True)):
        m["classes"] = [int(c) for c in g]


PHASE_KEYS = {"name", "epochs", "lr", "freeze_backbone", "schedule", "shift_px"}
SCHEDULES = ("constant", "cosine")


def _check_phases(phases: Any) -> None:
    if not isinstance(phases, list) or not all(isinstance(ph, dict) for ph in phases):
        raise ConfigError(f"family.phases: {phases!r} is not a list of phases; e.g. "
                          f"[{{name: scratch, epochs: 5, lr: 3e-3, schedule: cosine}}]")
    if not phases:
        raise ConfigError("family.phases: at least one phase is needed, e.g. [{name: scratch, epochs: 5, lr: 3e-3}]")
    if not isinstance(phases, list) or not all(isinstance(ph, dict) for ph in phases):
        raise ConfigError(f"family.phases: {phases!r} is not allowed; allowed: a list of phases, "
                          f"e.g. [{{name: scratch, epochs: 5, lr: 3e-3}}]")
    for i, ph in enumerate(phases):
        where = f"family.phases[{i}]"
        unknown = set(ph) - PHASE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(PHASE_KEYS)}")
        if not _is_int(ph.get("epochs")) or ph["epochs"] < 0:
            raise ConfigError(f"{where}.epochs: {ph.get('epochs')!r} must be an integer >= 0")
        if not _is_number(ph.get("lr")) or ph["lr"] <= 0:
            raise ConfigError(f"{where}.lr: {ph.get('lr')!r} must be a number > 0")
        shift = ph.get("shift_px", 0)
        if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
            raise ConfigError(f"{where}.shift_px: {shift!r} must be an integer >= 0 (random translation in pixels)")
        if ph.get("schedule", "constant") not in SCHEDULES:
            raise ConfigError(f"{where}.schedule: {ph['schedule']!r} is not allowed; allowed: {', '.join(SCHEDULES)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: key -> (test, what is allowed); checked before any data is loaded or Ray started.
_SETTINGS: dict[str, tuple[Any, str]] = {
    "seed": (_is_int, "an integer"),
    "train.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "train.alpha": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "train.temperature": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "train.kd": (lambda v: v in (True, False, "both"), "true, false, both"),
    "train.mode": (lambda v: v in ("per_variant", "joint"), "per_variant, joint"),
    "train.group_size": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 = all variants in one trial)"),
    "train.eval_every": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "train.teacher_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "train.teacher_lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "resources.cpu": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "resources.gpu": (lambda v: _is_number(v) and v >= 0, "a number >= 0 (fractions share a GPU)"),
    "tune.max_concurrent": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 = as many as resources allow)"),
    "tune.verbose": (lambda v: _is_int(v) and 0 <= v <= 3, "0, 1, 2, 3"),
    "tune.resume": (lambda v: v in ("auto", "never"), "auto, never"),
    "pool.overwrite": (lambda v: isinstance(v, bool), "true, false"),
    "pool.name": (lambda v: v is None or (isinstance(v, str) and v not in ("", ".", "..") and "/" not in v),
                  "null (the default name) or a name without /"),
    "ray.dashboard": (lambda v: isinstance(v, bool), "true, false"),
}


def check_settings(cfg: dict[str, Any]) -> None:
    """The plain settings (train, resources, tune, pool, ray) and the family's phases, each
    refused with its key and what is allowed — before data are loaded or Ray starts."""
    for key, (ok, allowed) in _SETTINGS.items():
        section, _, leaf = key.rpartition(".")
        node = cfg.get(section) if section else cfg
        if not isinstance(node, dict) or leaf not in node:
            continue  # a key the config tree does not set keeps its default
        if not ok(node[leaf]):
            raise ConfigError(f"{key}: {node[leaf]!r} is not allowed; allowed: {allowed}")
    _check_phases((cfg.get("family") or {}).get("phases"))


def _teacher_phase(train: dict[str, Any]) -> dict[str, Any]:
    """The teacher's one end-to-end phase, from ``train.teacher_*``: VIP trains its teacher "until
    achieving competitive accuracy" (VIP §IV-A), so it gets its own epochs, schedule and augmentation."""
    phase = {"name": "teacher", "epochs": train.get("teacher_epochs", 3), "lr": train.get("teacher_lr", 1e-3),
             "freeze_backbone": False, "schedule": train.get("teacher_schedule", "constant"),
             "shift_px": train.get("teacher_shift_px", 0)}
    for key, ok, allowed in (
            ("epochs", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
            ("lr", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a number > 0"),
            ("schedule", lambda v: v in SCHEDULES, ", ".join(SCHEDULES)),
            ("shift_px", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
             "an integer >= 0 (random translation in pixels)")):
        if not ok(phase[key]):
            raise ConfigError(f"train.teacher_{key}: {phase[key]!r} is not allowed; allowed: {allowed}")
    return phase


def plan_pool(cfg: dict[str, Any], num_classes: int, channels: int) -> Plan:
    check_settings(cfg)
    family, shape, train = cfg["family"], cfg["shape"], cfg["train"]
    known = set(list_models())
    for key in ("variants", "baselines"):
        for name in family.get(key) or []:
            if name not in known:
                raise ConfigError(f"family.{key}: unknown model {name!r}; allowed: {', '.join(sorted(known))}")
    kd_opt = train.get("kd", False)
    kd_modes = [True, False] if kd_opt == "both" else [bool(kd_opt)]
    recipes = build_recipes(cfg["diversity"])
    variants: list[str] = list(family["variants"])
    segments = {model_spec(v).segment: v for v in variants}
    cp = None
    if shape["name"] == "heterogeneous":
        wanted = shape.get("segments")
        if wanted:
            bad = [s for s in wanted if s not in segments]
            if bad:
                raise ConfigError(f"shape.segments: {bad} not in the family; allowed: {sorted(segments)}")
            variants = [segments[s] for s in wanted]
        slots = [(v, recipes[i % len(recipes)]) for i, v in enumerate(variants)]
    elif shape["name"] == "homogeneous":
        seg = shape.get("segment")
        if seg not in segments:
            raise ConfigError(f"shape.segment: {seg!r} not in the family; allowed: {sorted(segments)}")
        n = int(shape.get("n") or len(recipes))
        slots = [(segments[seg], recipes[i % len(recipes)]) for i in range(n)]
    elif shape["name"] == "class_parallel":
        cp = _class_parallel(shape, cfg, num_classes, known)
        slots = [(cp["model"], recipes[i % len(recipes)]) for i in range(cp["groups"])]
    else:
        raise ConfigError(f"shape.name: {shape['name']!r}; allowed: heterogeneous, homogeneous, class_parallel")

    teacher_model = family.get("teacher")
    kd_teacher = family.get("teacher_for_kd") or teacher_model
    needs_teacher = any(kd_modes) or teacher_model is not None
    teacher_id = (teacher_model or kd_teacher) if needs_teacher else None
    if teacher_id and teacher_id not in known:
        raise ConfigError(f"family.teacher: unknown model {teacher_id!r}; allowed: {', '.join(sorted(known))}")

    seed = int(cfg.get("seed", 0))
    c, ch = num_classes, channels
    members: list[dict[str, Any]] = []

    def add(mid, role, model, recipe, kd, init, outputs=c):
        members.append(_member(mid, role, model, recipe, variant_seed(seed, len(members)), kd, family, outputs, ch,
                               init))

    plain = Recipe("none")
    if teacher_id:
        role = "teacher" if model_spec(teacher_id).kind == "teacher" else "baseline"
        add(teacher_id, role, teacher_id, plain, False, False)
    for b in family.get("baselines") or []:
        if b != teacher_id:
            add(b, "teacher" if model_spec(b).kind == "teacher" else "baseline", b, plain, False, False)
    init = teacher_model is not None and model_spec(teacher_model).kind == "teacher"
    if cp:  # sensAI: one group model per class group, |g| + 1 outputs (its classes, then "other")
        init = init and model_spec(cp["model"]).family == model_spec(teacher_model).family
        for i, (model, recipe) in enumerate(slots):
            mid = f"{model}.g{i}" + ("" if recipe.name == "none" else f".{recipe.name}")
            add(mid, "cp_group", model, recipe, False, init, outputs=cp["sizes"][i] + 1)
            members[-1].update(classes=cp["classes"][i] if cp["classes"] else None, other_weight=cp["other_weight"])
        slots = []
    seen: dict[str, int] = {}
    for kd in kd_modes:
        suffix = "" if len(kd_modes) == 1 else (".kd" if kd else ".nokd")
        if shape["name"] == "homogeneous" and shape.get("baseline", True):
            add(f"{slots[0][0]}.B{suffix}", "baseline", slots[0][0], plain, kd, init)
        for model, recipe in slots:
            base = model if recipe.name == "none" else f"{model}.{recipe.name}"
            seen[base + suffix] = seen.get(base + suffix, 0) + 1
            mid = base + suffix if seen[base + suffix] == 1 else f"{base}.{seen[base + suffix]}{suffix}"
            add(mid, "variant", model, recipe, kd, init)

    stages: list[Stage] = []
    rest = members
    if teacher_id:
        cycles = train.get("teacher_cycles", 1)
        if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
            raise ConfigError(f"train.teacher_cycles: {cycles!r} is not allowed; allowed: an integer >= 1")
        # cosine with warm restarts: each cycle is a phase, and each phase anneals from teacher_lr again
        teacher_phases = [{**_teacher_phase(train), "name": "teacher" if c == 0 else f"teacher{c + 1}"}
                          for c in range(cycles)]
        if model_spec(teacher_id).kind != "teacher":  # a baseline that teaches trains like the family
            teacher_phases = list(family["phases"])
        stages.append(Stage("teacher", [[members[0]]], teacher_phases))
        rest = members[1:]
    if cp and (cp["grouping"] == "confusability" or cp["init"] == "probe"):
        probe = _member(f"{cp['model']}.probe", "probe", cp["model"], plain, variant_seed(seed, len(members)), False,
                        family, c, ch, init)
        probe["holdout"] = {"fraction": cp["val_fraction"], "seed": seed}
        phases = list(family["phases"]) if cp["probe_epochs"] is None else [
            {"name": "probe", "epochs": cp["probe_epochs"], "lr": float(family["phases"][-1]["lr"]),
             "freeze_backbone": False, "schedule": "cosine"}]
        stages.append(Stage("probe", [[probe]], phases))
    if str(train.get("mode")) == "joint":
        size = int(train.get("group_size") or 0) or len(rest)
        groups = [rest[i:i + size] for i in range(0, len(rest), size)]
    else:
        groups = [[m] for m in rest]
    if groups:  # a pool of the teacher alone (family.variants=[] family.baselines=[]) has no members stage
        stages.append(Stage("members", groups, list(family["phases"])))
    name = cfg["pool"].get("name") or default_pool_name(cfg)
    settings = {"data": {k: v for k, v in cfg["data"].items() if k != "root"}, "seed": seed,
                # the teacher's settings decide the result only where the pool has a teacher
                "train": {k: v for k, v in train.items() if k not in ("mode", "group_size", "eval_every")
                          and not (teacher_id is None and k.startswith("teacher_"))}}
    if cp:
        settings["class_parallel"] = {k: v for k, v in cp.items() if k != "classes"}
    return Plan(name=name, members=members, stages=stages, teacher_id=teacher_id, settings=settings)
