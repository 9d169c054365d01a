"""The default pools of the main job, trained on first use and cached in the pool store:

* ``default`` — VP's heterogeneous MobileNetV2 family (V1–V5 + the MobileNetV2 baseline) on
  MNIST-5k (a few minutes on 2 CPU cores);
* ``default-cp`` — class parallelism (sensAI) on the same data, split and seed: five class
  groups chosen by confusability, one VP V3 group model each (a few minutes more).
"""
from __future__ import annotations

from typing import Callable

from vip_ray.pool.store import Pool, PoolError, pools_root

DEFAULT_POOL = "default"
DEFAULT_OVERRIDES = (
    f"pool.name={DEFAULT_POOL}", "data=mnist5k", "family=vp", "shape=heterogeneous", "diversity=none",
    "train.mode=per_variant", "resources.cpu=1",
)
DEFAULT_CP_POOL = "default-cp"
DEFAULT_CP_OVERRIDES = (  # same data, split and seed as DEFAULT_OVERRIDES; the baseline lives in `default`
    f"pool.name={DEFAULT_CP_POOL}", "data=mnist5k", "family=vp", "family.baselines=[]", "shape=class_parallel",
    "shape.groups=5", "shape.grouping=confusability", "diversity=none", "train.mode=per_variant", "resources.cpu=1",
)


def _ensure(name: str, overrides: tuple[str, ...], what: str, root: str | None,
            log: Callable[[str], None], extra_overrides: tuple[str, ...]) -> Pool:
    path = pools_root(root) / name
    if path.exists():
        try:
            return Pool.load(path)
        except PoolError as e:
            raise PoolError(f"{e}; delete {path} to rebuild the {what}") from None
    from vip_ray.tune.config import compose
    from vip_ray.tune.runner import train_pool

    log(f"[vip_ray] building the {what} into {path} (first use; cached afterwards)")
    return Pool.load(train_pool(compose([*overrides, f"pool.root={pools_root(root)}", *extra_overrides]), log=log))


def ensure_default_pool(root: str | None = None, log: Callable[[str], None] = print,
                        extra_overrides: tuple[str, ...] = ()) -> Pool:
    """Open the default pool, training it first if the store does not have it."""
    return _ensure(DEFAULT_POOL, DEFAULT_OVERRIDES, "default pool", root, log, extra_overrides)


def ensure_default_cp_pool(root: str | None = None, log: Callable[[str], None] = print,
                           extra_overrides: tuple[str, ...] = ()) -> Pool:
    """Open the default class-parallel pool ``default-cp``, training it first if the store does not have it."""
    return _ensure(DEFAULT_CP_POOL, DEFAULT_CP_OVERRIDES, "default class-parallel pool", root, log, extra_overrides)
