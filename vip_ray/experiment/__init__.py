"""Scenario → strategy → engine → result folders: ``vip-sim run`` (:func:`run_scenario`),
``compare`` and ``sweep``. One path for every engine (:mod:`vip_ray.experiment.run`)."""
from vip_ray.experiment.run import RunError, replicate, run_scenario

__all__ = ["RunError", "replicate", "run_scenario"]
