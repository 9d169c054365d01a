"""Scenario + pool + placement → a simulation → result tables (the middle of the data flow).

:func:`build_deployment` turns a validated scenario and a pool into the numeric spec of
:mod:`vip_ray.sim`; :func:`request_table` turns the engine's timing into per-request rows with
real predictions from the pool's bank; :func:`run_scenario` writes a run directory.
"""
from vip_ray.experiment.deployment import Deployment, build_deployment
from vip_ray.experiment.outcome import request_table
from vip_ray.tables import summarize

__all__ = ["Deployment", "build_deployment", "request_table", "summarize"]
