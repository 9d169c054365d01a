"""``python -m vip_ray.tune [group=option ...] [key=value ...]``: train a variant pool with Ray Tune.

The config tree is the top-level ``tune/`` folder (Hydra: one folder per config group,
one file per option). See :func:`compose` and :func:`vip_ray.tune.runner.train_pool`.
"""
from vip_ray.tune.config import compose, config_dir

__all__ = ["compose", "config_dir"]
