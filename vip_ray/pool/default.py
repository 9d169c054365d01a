"""The default pool of the main job: VP's heterogeneous MobileNetV2 family on MNIST-5k,
trained on first use (a few minutes on 2 CPU cores) and cached in the pool store."""
from __future__ import annotations

from typing import Callable

from vip_ray.pool.store import Pool, PoolError, pools_root

DEFAULT_POOL = "default"
DEFAULT_OVERRIDES = (
    f"pool.name={DEFAULT_POOL}", "data=mnist5k", "family=vp", "shape=heterogeneous", "diversity=none",
    "train.mode=per_variant", "resources.cpu=1",
)


def ensure_default_pool(root: str | None = None, log: Callable[[str], None] = print,
                        extra_overrides: tuple[str, ...] = ()) -> Pool:
    """Open the default pool, training it first if the store does not have it."""
    path = pools_root(root) / DEFAULT_POOL
    if path.exists():
        try:
            return Pool.load(path)
        except PoolError as e:
            raise PoolError(f"{e}; delete {path} to rebuild the default pool") from None
    from vip_ray.tune.config import compose
    from vip_ray.tune.runner import train_pool

    log(f"[vip_ray] building the default pool into {path} (first use; cached afterwards)")
    overrides = list(DEFAULT_OVERRIDES) + [f"pool.root={pools_root(root)}"] + list(extra_overrides)
    return Pool.load(train_pool(compose(overrides), log=log))
