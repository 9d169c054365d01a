"""Ray Tune driver: trains a plan's trials on the Ray cluster and writes the pool.

Stage ``teacher`` (when KD or VIP slicing needs one) runs first; then, for a class-parallel
pool grouped by confusability, stage ``probe`` (a C-way model whose confusion on a validation
split carved from train chooses the class groups); stage ``members`` trains every other
member, one trial per variant or per joint group. Each stage is a Tune experiment under
``<tune.storage>/<pool>/<stage>``; an interrupted run is resumed from there (finished
trials are not retrained, running ones continue from their last epoch checkpoint).
"""
from __future__ import annotations

from vip_ray.errors import UserError

import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vip_ray.core.aggregation import softmax
from vip_ray.class_groups import confusability_groups, soft_confusion
from vip_ray.data import load_dataset
from vip_ray.interrupts import start_ray
from vip_ray.models import model_spec, profile_model
from vip_ray.pool import Pool, PoolError, pools_root, vip_ray_home, write_pool
from vip_ray.training.trainer import build_member, train_group
from vip_ray.tune.plan import ConfigError, Plan, assign_classes, check_settings, plan_pool

STATE_FILE = "state.pt"
FINAL_FILE = "final.pt"
PLAN_FILE = "plan.json"


class TrainingError(UserError, RuntimeError):
    pass


#: What an interrupted training run says (the README's advice; Tune's own hint names its API).
RESUME_HINT = ("run the same command again to resume: finished variants are kept, running ones continue "
               "from their last epoch")


class _DropTuneRestoreHint(logging.Filter):
    """Tune ends an interrupted run with ``Resume experiment with: Tuner.restore(...)``; our
    answer is :data:`RESUME_HINT`, printed once by the command line."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("Resume experiment with" in text or "has been interrupted" in text
                    or "Trials did not complete" in text)


def versions() -> dict[str, str]:
    import ray
    import torchvision

    import vip_ray

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "ray": ray.__version__, "numpy": np.__version__, "vip_ray": vip_ray.__version__,
            "platform": platform.platform()}


def _trainable(config: dict[str, Any], groups: list[dict[str, Any]]) -> None:
    """One Tune trial: train its group, checkpoint every epoch, hand back weights + logits.

    ``groups`` travels through the object store (tune.with_parameters), so a trial's config —
    what the terminal and the dashboard show — is just its group index ``gi``."""
    from ray import tune

    group = groups[config["gi"]]
    restore = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            final = _find_final(Path(d), Path(ckpt.path).parent)
            if final is not None:  # finished before the interruption: report it again, do not retrain
                with tempfile.TemporaryDirectory() as out:
                    shutil.copy(final, Path(out) / FINAL_FILE)
                    tune.report({"done_epochs": -1, "final": True}, checkpoint=tune.Checkpoint.from_directory(out))
                return
            restore = torch.load(Path(d) / STATE_FILE, weights_only=False)

    def report(row: dict[str, Any], state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as out:
            torch.save(state, Path(out) / STATE_FILE)
            metrics = {k.replace("/", "."): v for k, v in row.items()}
            tune.report({**metrics, "final": False}, checkpoint=tune.Checkpoint.from_directory(out))

    result = train_group(group, report=report, restore=restore)
    with tempfile.TemporaryDirectory() as out:
        torch.save(result, Path(out) / FINAL_FILE)
        last = {k.replace("/", "."): v for k, v in (result["history"][-1] if result["history"] else {}).items()}
        tune.report({**last, "final": True}, checkpoint=tune.Checkpoint.from_directory(out))


def _trial_namer(group_cfgs: list[dict[str, Any]]):
    def name(trial) -> str:
        ids = [m["id"] for m in group_cfgs[trial.config["gi"]]["members"]]
        label = ids[0] if len(ids) == 1 else f"{ids[0]}+{len(ids) - 1}"
        return f"{trial.config['gi']:03d}_{label}"[:80].replace("/", "_")

    return name


def init_ray(ray_cfg: dict[str, Any]) -> bool:
    """Start (or join, with ray.address) a Ray cluster; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"address": ray_cfg.get("address"), "log_to_driver": True}
    if not ray_cfg.get("address"):
        kwargs["include_dashboard"] = bool(ray_cfg.get("dashboard", True))
        if ray_cfg.get("temp_dir"):
            kwargs["_temp_dir"] = str(ray_cfg["temp_dir"])
    try:
        start_ray(**kwargs)  # a Ctrl-C during start-up shuts down what it started
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise TrainingError(f"ray.address={ray_cfg.get('address')!r}: cannot start or join a Ray cluster ({e})") from None
    return True


def _check_resources(res: dict[str, Any]) -> None:
    """Refuse per-trial resources the cluster can never give (Tune would wait forever)."""
    import ray

    have = ray.cluster_resources()
    for key in ("cpu", "gpu"):
        want = float(res[key])
        total = float(have.get(key.upper(), 0.0))
        if want > total:
            raise TrainingError(f"resources.{key}={want:g} per trial, but the Ray cluster has {total:g} "
                                f"{key.upper()}s in all; lower it or join a bigger cluster (ray.address=...)")


def _run_stage(name: str, group_cfgs: list[dict[str, Any]], exp_root: Path, cfg: dict[str, Any],
               log: Callable[[str], None]) -> dict[str, Any]:
    from ray import tune

    # one checkpoint per epoch is the point; Tune's advice to checkpoint less is noise here
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    res = cfg["resources"]
    trainable = tune.with_resources(tune.with_parameters(_trainable, groups=group_cfgs),
                                    {"cpu": float(res["cpu"]), "gpu": float(res["gpu"])})
    path = exp_root / name
    if tune.Tuner.can_restore(str(path)):
        log(f"[vip_ray.tune] resuming stage {name!r} from {path}")
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"gi": tune.grid_search(list(range(len(group_cfgs))))},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=int(cfg["tune"].get("max_concurrent") or 0) or None,
                trial_name_creator=_trial_namer(group_cfgs), trial_dirname_creator=_trial_namer(group_cfgs),
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=str(exp_root),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=int(cfg["tune"].get("verbose", 1)),
            ),
        )
    hint_filter = _DropTuneRestoreHint()
    tune_logger = logging.getLogger("ray.tune.tune")
    tune_logger.addFilter(hint_filter)
    try:
        grid = tuner.fit()  # Ctrl-C: Tune saves the experiment state, stops the trials and returns
    finally:
        tune_logger.removeFilter(hint_filter)
    unfinished = [r for r in grid if r.error is None and not (r.metrics or {}).get("final") and _final_file(r) is None]
    if unfinished:
        raise KeyboardInterrupt(f"stage {name!r}: {len(unfinished)} trial(s) stopped before the end")
    out: dict[str, Any] = {"weights": {}, "logits": {}, "stats": {}, "val": {}, "teacher_seconds": 0.0,
                           "fingerprints": set()}
    for r in grid:
        if r.error is not None:
            raise TrainingError(f"stage {name!r}: a trial failed ({type(r.error).__name__}: {r.error}); "
                                f"fix it and run the same command again to resume from {path}")
        final_file = _final_file(r)
        if final_file is None:
            raise TrainingError(f"stage {name!r}: a trial finished without its final checkpoint ({r.path}); "
                                f"run the same command again to resume")
        final = torch.load(final_file, weights_only=False)
        for key in ("weights", "logits", "stats"):
            out[key].update(final[key])
        out["val"].update(final.get("val", {}))
        out["teacher_seconds"] += final["teacher_seconds"]
        out["fingerprints"].add(final["fingerprint"])
        for mid in final["stats"]:
            final["stats"][mid]["trial"] = Path(r.path).name
    return out


def _find_final(checkpoint_dir: Path | None, trial_dir: Path | None) -> Path | None:
    """A trial's ``final.pt``: in the checkpoint Tune registered, else the newest one in the trial's folder.

    The worker writes each checkpoint to the trial's folder before it reports; the driver registers
    it only later (after its loggers saw the result). A Ctrl-C in between leaves a finished trial
    whose registered checkpoint is the epoch before, with the final one already on disk."""
    candidates = [checkpoint_dir / FINAL_FILE] if checkpoint_dir is not None else []
    if trial_dir is not None:
        candidates += sorted(trial_dir.glob(f"checkpoint_*/{FINAL_FILE}"), reverse=True)
    return next((c for c in candidates if c.is_file()), None)


def _final_file(result) -> Path | None:
    return _find_final(Path(result.checkpoint.path) if result.checkpoint is not None else None,
                       Path(result.path) if result.path else None)


def _member_record(m: dict[str, Any], weights: dict, logits: np.ndarray, labels: np.ndarray,
                   stats: dict[str, Any]) -> dict[str, Any]:
    spec = model_spec(m["model"])
    model = build_member({**m, "init_from_teacher": False, "pretrained": "never"})
    model.load_state_dict(weights)
    prof = profile_model(model)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return {
        "id": m["id"], "role": m["role"], "model": m["model"], "family": spec.family, "segment": spec.segment,
        "input_size": m["build"]["input_size"], "nominal_input_size": spec.input_size, "width": spec.width,
        "last_conv_factor": spec.last_conv_factor, "params": prof["params"], "macs": prof["macs"],
        "bytes": prof["bytes"], "recipe": m["recipe"], "seed": m["seed"], "kd": m["kd"], "cut": m["build"]["cut"],
        "build": m["build"], "classes": m.get("classes"), "accuracy": float((logits.argmax(1) == labels).mean()),
        "top5": float((top5 == labels[:, None]).any(1).mean()), "train": stats,
        "weights": f"weights/{m['id']}.pt",
    }


def train_pool(cfg: dict[str, Any], *, log: Callable[[str], None] = print) -> Path:
    """Train the pool that ``cfg`` (a resolved Hydra config as a dict) describes; return its path."""
    check_settings(cfg)  # a bad setting is refused before data are loaded or Ray starts
    root = pools_root(cfg["pool"]["root"])
    data_cfg = dict(cfg["data"])
    if data_cfg.get("root"):
        data_cfg["root"] = str(Path(data_cfg["root"]).expanduser().resolve())  # trials run elsewhere
    cfg = {**cfg, "data": data_cfg}
    data = load_dataset(data_cfg)  # bad data config fails here, before Ray starts
    plan = plan_pool(cfg, data.num_classes, data.channels)
    digest = plan.digest()  # before a probe fills in the class groups: what a rerun plans again
    final_dir = root / plan.name
    if final_dir.exists() and not cfg["pool"].get("overwrite"):
        existing = Pool.load(final_dir)  # refuses a damaged pool with the reason
        if existing.manifest.config.get("plan_digest") != digest:
            raise PoolError(f"{final_dir}: pool {plan.name!r} exists but was trained with a different config; "
                            f"pick another pool.name, or pool.overwrite=true to retrain it")
        log(f"[vip_ray.tune] pool {plan.name!r} already exists at {final_dir} (pool.overwrite=true retrains it)")
        return final_dir

    exp_root = Path(cfg["tune"]["storage"] or vip_ray_home() / "tune").expanduser().resolve() / plan.name
    _check_resume(exp_root, plan, cfg["tune"].get("resume", "auto"), log)
    started = init_ray(cfg["ray"])
    t0 = time.time()
    try:
        _check_resources(cfg["resources"])
        trained: dict[str, Any] = {"weights": {}, "logits": {}, "stats": {}}
        teacher_entry = None
        teacher_seconds = 0.0
        extra: dict[str, Any] = {}
        for stage in plan.stages:
            group_cfgs = [{"members": g, "data": data_cfg, "train": cfg["train"], "phases": stage.phases,
                           "teacher": teacher_entry, "threads": max(1, int(cfg["resources"]["cpu"])),
                           "deterministic": bool(cfg["train"].get("deterministic", True)),
                           "gpu": cfg["resources"]["gpu"]} for g in stage.groups]
            log(f"[vip_ray.tune] stage {stage.name!r}: {len(group_cfgs)} trial(s), "
                f"{sum(len(g) for g in stage.groups)} member(s)")
            out = _run_stage(stage.name, group_cfgs, exp_root, cfg, log)
            if out["fingerprints"] != {data.fingerprint()}:
                raise TrainingError("trials evaluated on a different test split than the driver; "
                                    "the data config is not deterministic")
            for key in ("weights", "logits", "stats"):
                trained[key].update(out[key])
            teacher_seconds += out["teacher_seconds"]
            if stage.name == "probe":
                extra["class_parallel"] = _after_probe(plan, stage.groups[0][0]["id"], out, exp_root, data.num_classes)
                log(f"[vip_ray.tune] class groups by {extra['class_parallel']['grouping']}: "
                    f"{extra['class_parallel']['groups']}")
            if stage.name == "teacher":
                tid = plan.teacher_id
                tpath = exp_root / "teacher.pt"
                torch.save(out["weights"][tid], tpath)
                tm = next(m for m in plan.members if m["id"] == tid)
                teacher_entry = {"model": tm["model"], "build": tm["build"], "weights_path": str(tpath)}
    finally:
        if started:
            import ray

            ray.shutdown()

    labels = data.test_y.numpy()
    cp_groups = [m["classes"] for m in plan.members if m["role"] == "cp_group"]
    if cp_groups and "class_parallel" not in extra:
        extra["class_parallel"] = {"grouping": plan.settings["class_parallel"]["grouping"],
                                   "init": plan.settings["class_parallel"]["init"], "groups": cp_groups}
    records = [_member_record(m, trained["weights"][m["id"]], trained["logits"][m["id"]], labels,
                              trained["stats"][m["id"]]) for m in plan.members]
    manifest = {
        "name": plan.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "family": cfg["family"]["name"], "shape": cfg["shape"]["name"], "diversity": cfg["diversity"]["name"],
        "data": {"name": data.name, "num_classes": data.num_classes, "channels": data.channels,
                 "class_names": list(map(str, data.class_names)), "n_test": int(len(labels)),
                 "n_train": int(len(data.train_y)), "fingerprint": data.fingerprint()},
        "seed": int(cfg.get("seed", 0)), "members": records,
        "config": {**cfg, **extra, "plan_digest": digest, "wall_seconds": round(time.time() - t0, 1),
                   "teacher_seconds": round(teacher_seconds, 3), "argv": sys.argv},
        "versions": versions(),
    }
    path = write_pool(root, manifest, trained["weights"], trained["logits"], labels,
                      data.test_indices, overwrite=bool(cfg["pool"].get("overwrite")))
    shutil.rmtree(exp_root, ignore_errors=True)  # the pool is the product; checkpoints were for resuming
    log(f"[vip_ray.tune] wrote pool {plan.name!r} to {path} in {time.time() - t0:.0f} s")
    return path


def _after_probe(plan: Plan, probe_id: str, out: dict[str, Any], exp_root: Path, num_classes: int) -> dict[str, Any]:
    """What the CP probe decides: with ``grouping=confusability`` the class groups (sensAI: its
    soft confusion on the validation split), with ``init=probe`` the group models' starting
    weights. Sets both on the plan's cp_group members; returns what the manifest records."""
    cp = plan.settings["class_parallel"]
    members = [m for m in plan.members if m["role"] == "cp_group"]
    probe = out["val"][probe_id]
    val_sha = hashlib.sha256(np.asarray(probe["indices"], np.int64).tobytes()).hexdigest()[:16]
    info: dict[str, Any] = {"grouping": cp["grouping"], "init": cp["init"], "probe": {
        "id": probe_id, "n_val": int(len(probe["labels"])), "val_indices_sha256": val_sha,
        "val_accuracy": float((probe["logits"].argmax(1) == probe["labels"]).mean())}}
    if cp["grouping"] == "confusability":
        confusion = soft_confusion(softmax(probe["logits"].astype(np.float64), axis=-1), probe["labels"], num_classes)
        assign_classes(plan, confusability_groups(confusion, len(members)))
        info["probe"]["soft_confusion"] = confusion.round(5).tolist()
    if cp["init"] == "probe":
        path = exp_root / "probe.pt"
        torch.save(out["weights"][probe_id], path)
        for m in members:
            m["init_from"] = str(path)
    info["groups"] = [m["classes"] for m in members]
    return info


def _check_resume(exp_root: Path, plan: Plan, resume: str, log: Callable[[str], None]) -> None:
    if resume not in ("auto", "never"):
        raise ConfigError(f"tune.resume: {resume!r} is not allowed; allowed: auto, never")
    marker = exp_root / PLAN_FILE
    if exp_root.exists() and (resume == "never" or not marker.exists()):
        shutil.rmtree(exp_root)
    elif marker.exists():
        old = json.loads(marker.read_text())["digest"]
        if old != plan.digest():
            raise ConfigError(
                f"{exp_root}: an unfinished run of pool {plan.name!r} with a different config is there; "
                f"run the same config to resume it, or pass tune.resume=never to start over"
            )
        log(f"[vip_ray.tune] an unfinished run of {plan.name!r} is there: resuming (finished trials are kept)")
    exp_root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"digest": plan.digest(), "members": [m["id"] for m in plan.members]}))
