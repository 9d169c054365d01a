"""The pools a command needs, opened from the store or the shipped reference, trained when missing.

The pool layer (:mod:`vip_ray.pool`) only reads and writes pools; training is
:mod:`vip_ray.tune`'s job. Deciding to train one because a command needs it sits here, above both:

* ``default`` ships with the package as a reference pool, so the main job never trains it; a
  store copy (``vip-sim pools default --retrain``) shadows the reference, and opening it says so;
* ``default-cp`` and scenarios with ``pool.build`` are trained on first use into the store.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vip_ray.pool import (
    Pool,
    PoolError,
    find_pool,
    is_reference,
    pools_root,
    reference_root,
)
from vip_ray.pool.default import (
    DEFAULT_CP_OVERRIDES,
    DEFAULT_CP_POOL,
    DEFAULT_OVERRIDES,
    DEFAULT_POOL,
)

Log = Callable[[str], None]


def open_pool_by_name(name: str, root: str | None = None, log: Log = print) -> Pool:
    """Pool ``name`` from the store, else the shipped reference; says when a store pool shadows
    a reference pool of the same name (its tables differ from the reference's)."""
    pool = Pool.open(name, root)
    if not is_reference(pool.path) and pool.path.name == name and (reference_root() / name).is_dir():
        log(f"[vip_ray] pool {pool.name!r}: using the copy trained on this machine ({pool.path}), not the shipped "
            f"reference; delete it to use the reference")
    return pool


def _train(overrides: tuple[str, ...], root: str | Path | None, log: Log, *, overwrite: bool = False) -> Pool:
    from vip_ray.tune.config import compose
    from vip_ray.tune.runner import train_pool

    sets = [*overrides, f"pool.root={pools_root(root)}"] + (["pool.overwrite=true"] if overwrite else [])
    return Pool.load(train_pool(compose(sets), log=log))


def _ensure(name: str, overrides: tuple[str, ...], what: str, root: str | None, log: Log,
            extra_overrides: tuple[str, ...], retrain: bool) -> Pool:
    path = None if retrain else find_pool(name, root)
    if path is not None:
        try:
            return open_pool_by_name(name, root, log)
        except PoolError as e:
            if is_reference(path):
                raise  # its message says how to restore it
            raise PoolError(f"{e}; delete {path} to rebuild the {what}") from None
    target = pools_root(root) / name
    why = "retraining on request" if retrain else "first use; cached afterwards"
    log(f"[vip_ray] building the {what} into {target} ({why})")
    return _train((*overrides, *extra_overrides), root, log, overwrite=retrain)


def ensure_default_pool(root: str | None = None, log: Log = print, extra_overrides: tuple[str, ...] = (),
                        retrain: bool = False) -> Pool:
    """The default pool: the store's copy if there is one, else the shipped reference; trained
    into the store when neither exists, or when ``retrain``."""
    return _ensure(DEFAULT_POOL, DEFAULT_OVERRIDES, "default pool", root, log, extra_overrides, retrain)


def ensure_default_cp_pool(root: str | None = None, log: Log = print, extra_overrides: tuple[str, ...] = (),
                           retrain: bool = False) -> Pool:
    """The default class-parallel pool ``default-cp``, trained into the store on first use."""
    return _ensure(DEFAULT_CP_POOL, DEFAULT_CP_OVERRIDES, "default class-parallel pool", root, log,
                   extra_overrides, retrain)


def rebuild_reference_pool(log: Log = print, extra_overrides: tuple[str, ...] = ()) -> Pool:
    """Maintainers: retrain the shipped reference ``default`` pool in place with the project's own
    training command and rewrite ``SHA256SUMS``; commit the result."""
    from vip_ray.pool.store import write_reference_sums

    log(f"[vip_ray] rebuilding the shipped reference default pool in {reference_root() / DEFAULT_POOL}")
    _train((*DEFAULT_OVERRIDES, *extra_overrides), reference_root(), log, overwrite=True)
    log(f"[vip_ray] wrote {write_reference_sums()}")
    return Pool.open(reference_root() / DEFAULT_POOL)


def open_scenario_pool(scenario, log: Log) -> Pool:
    """A scenario's pool: the default pool (store or reference); one with ``pool.build`` overrides,
    trained into the store on first use; else one from the store or the reference pools."""
    root, name = scenario.pool.root, scenario.pool.name
    if name == DEFAULT_POOL and not scenario.pool.build:
        return ensure_default_pool(root, log=log)
    if scenario.pool.build and not (pools_root(root) / name).exists():
        log(f"[vip_ray] pool {name!r} is not in the store: training it on first use ({' '.join(scenario.pool.build)})")
        return _train((*scenario.pool.build, f"pool.name={name}"), root, log)
    return open_pool_by_name(name, root, log)


def compare_banks(local: Pool, reference: Pool) -> list[dict]:
    """Per member of both pools: top-1 of each, share of test samples with the same prediction,
    and whether the logits are bit-identical — how far a retrained pool is from the reference."""
    rows = []
    if local.manifest.data.get("fingerprint") != reference.manifest.data.get("fingerprint"):
        raise PoolError(f"{local.path} and {reference.path} were evaluated on different test splits")
    ref_ids = set(reference.manifest.ids())
    for mid in local.manifest.ids():
        if mid not in ref_ids:
            continue
        a, b = local.logits([mid])[0], reference.logits([mid])[0]
        rows.append({"member": mid, "top1_local": float((a.argmax(1) == local.labels).mean()),
                     "top1_reference": float((b.argmax(1) == reference.labels).mean()),
                     "same_prediction": float((a.argmax(1) == b.argmax(1)).mean()),
                     "bit_identical": bool(np.array_equal(a, b))})
    return rows
