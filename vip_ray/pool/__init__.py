"""The pool store: trained variants, their manifest and their prediction bank.

Written only by training (:mod:`vip_ray.tune`), read by everything else.
"""
from vip_ray.pool.store import (
    BANK_FILE,
    MANIFEST_FILE,
    SCHEMA_VERSION,
    MemberRecord,
    Pool,
    PoolError,
    PoolManifest,
    list_pools,
    pools_root,
    write_pool,
)

__all__ = [
    "BANK_FILE", "MANIFEST_FILE", "SCHEMA_VERSION", "MemberRecord", "Pool", "PoolError",
    "PoolManifest", "list_pools", "pools_root", "write_pool",
]
