"""Scenario → strategy → engine → result folders: ``vip-sim run`` (:func:`run_scenario`),
``compare`` and ``sweep``. One path for every engine (:mod:`vip_ray.experiment.run`); a sweep
or comparison is a study, run in this process or as Ray tasks (:class:`StudyOptions`,
:mod:`vip_ray.experiment.study`)."""
from vip_ray.experiment.run import RunError, replicate, run_scenario
from vip_ray.experiment.study import StudyError, StudyOptions

__all__ = ["RunError", "StudyError", "StudyOptions", "replicate", "run_scenario"]
