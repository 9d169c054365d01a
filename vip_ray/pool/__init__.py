"""The pool store: trained variants, their manifest and their prediction bank.

Written only by training (:mod:`vip_ray.tune`), read by everything else. Pools live in the
store (``pools_root()``: ``$VIP_RAY_POOLS``, else ``$VIP_RAY_HOME/pools``) or ship with the
package as read-only reference pools (``reference_root()``); see :mod:`vip_ray.pool.store`.
"""
from vip_ray.pool.store import (
    BANK_FILE,
    MANIFEST_FILE,
    SCHEMA_VERSION,
    MemberRecord,
    Pool,
    PoolError,
    PoolManifest,
    find_pool,
    is_reference,
    list_pools,
    pools_root,
    reference_pools,
    reference_root,
    verify_reference,
    vip_ray_home,
    write_pool,
)

__all__ = [
    "BANK_FILE", "MANIFEST_FILE", "SCHEMA_VERSION", "MemberRecord", "Pool", "PoolError",
    "PoolManifest", "find_pool", "is_reference", "list_pools", "pools_root", "reference_pools", "reference_root",
    "verify_reference", "vip_ray_home", "write_pool",
]
