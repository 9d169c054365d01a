"""Strategies: how a request is served (one file per strategy, registered here).

    vp      VP (seed 002): heterogeneous variants, scaled top-k aggregation
    vip     VIP (seed 000): diverse variants, averaged probabilities
    single  the whole baseline model on one device
    mp      model parallelism: the baseline cut into slices over a chain of devices
    cp      class parallelism (sensAI): one class-group model per device
    coach   COACH (seed 004): end–cloud pipeline, partition + quantization, semantic-cache exit
    neurosurgeon, dads, spinn, jps   COACH's end–cloud baselines

Add one with ``@register_strategy("name")`` on a :class:`Strategy` subclass (see ``base.py``).
"""
from vip_ray.experiment.strategies.base import (DEVICE_COLUMNS, REQUEST_COLUMNS, STRATEGIES, Context, Replication,
                                                Strategy, get_strategy, register_strategy, with_strategy)
from vip_ray.experiment.strategies import vp, vip, single, mp, cp  # noqa: F401,E401  (registers the built-ins)
from vip_ray.experiment.strategies import coach, neurosurgeon, dads, spinn, jps  # noqa: F401,E401  (end–cloud)

__all__ = ["DEVICE_COLUMNS", "REQUEST_COLUMNS", "STRATEGIES", "Context", "Replication", "Strategy", "get_strategy",
           "register_strategy", "with_strategy"]
