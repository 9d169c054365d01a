"""Strategies: how a request is served — one file per strategy, all registered here, in one place.

    vp      VP: heterogeneous variants, scaled top-k aggregation (VP eq. 1)
    vip     VIP: diverse variants, averaged probabilities
    single  the whole baseline model on one device
    mp      model parallelism: the baseline cut into slices over a chain of devices
    cp      class parallelism (sensAI): one class-group model per device
    coach   COACH: end–cloud pipeline, partition + quantization, semantic-cache exit
    neurosurgeon, dads, spinn, jps   COACH's end–cloud baselines

Add one with ``@register_strategy("name")`` on a :class:`Strategy` subclass (see ``base.py``).
Entries are lazy (``"module:Class"``): listing the names imports no strategy module.
"""
from vip_ray.strategies.base import (DEVICE_COLUMNS, REQUEST_COLUMNS, STRATEGIES, Context, Strategy, get_strategy,
                                     register_strategy, runs_on, with_strategy)

for _name, _cls in {"vp": "vp:VariantParallel", "vip": "vip:VariantInferenceParallel", "single": "single:SingleDevice",
                    "mp": "mp:ModelParallel", "cp": "cp:ClassParallel", "coach": "coach:Coach",
                    "neurosurgeon": "neurosurgeon:Neurosurgeon", "dads": "dads:Dads", "spinn": "spinn:Spinn",
                    "jps": "jps:Jps"}.items():
    STRATEGIES.register(_name, f"vip_ray.strategies.{_cls}")

__all__ = ["DEVICE_COLUMNS", "REQUEST_COLUMNS", "STRATEGIES", "Context", "Strategy", "get_strategy",
           "register_strategy", "runs_on", "with_strategy"]
