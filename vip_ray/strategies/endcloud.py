"""The registered end–cloud strategies' common class (``coach``, ``neurosurgeon``, ``dads``,
``spinn``, ``jps``, one file each next to this one): options → :func:`setup` → the strategy's
planner → a :class:`~vip_ray.core.deployment.Pipeline` per replication (the simulator runs it, :mod:`vip_ray.sim.pipeline`; live on Ray Serve, :mod:`vip_ray.serve.pipeline`)."""
from __future__ import annotations

from typing import Callable, ClassVar

from vip_ray.coach.planners import plan_local
from vip_ray.coach.runner import (EndCloudOptions, Planned, Setup, availability_refusal, plain, samples_for, setup,
                                  workload_times)
from vip_ray.core.deployment import Pipeline
from vip_ray.core.tables import top_m
from vip_ray.strategies.base import Context, Strategy


class EndCloudStrategy(Strategy):
    """An end device and a cloud server in a three-stage pipeline; a subclass sets ``planner``,
    ``planner(setup, options, top_m, log) -> Planned`` (``vip_ray.coach.planners``)."""

    kind = "pipeline"
    engines = ("sim", "serve")
    Options: ClassVar[type[EndCloudOptions]] = EndCloudOptions
    uses_variants: ClassVar[bool] = False          # partitions one member; no variant pool needed
    planner: ClassVar[Callable[..., Planned]]

    def refuses(self, scenario) -> str | None:
        return availability_refusal(scenario, self.options)

    def prepare(self, ctx: Context) -> None:
        self.setup: Setup = setup(ctx.scenario, ctx.pool, self.options, name=self.name, file=ctx.file, log=ctx.log)
        self.m = top_m(ctx.pool.num_classes)
        if self.setup.cloud_down:
            self.planned: Planned = plan_local(self.setup, self.m)
        else:
            self.planned = type(self).planner(self.setup, self.options, self.m, ctx.log)

    def deploy(self, ctx: Context, seed: int) -> Pipeline:
        st = self.setup
        arrivals = workload_times(st.scenario, seed)
        rows = st.model.evaluation.index                  # frames come from the evaluation part
        samples = rows[samples_for(st.scenario, st.pool.labels[rows], len(arrivals), seed)]
        return Pipeline(strategy=self.name, scenario=ctx.scenario.name, seed=seed, pool=ctx.pool, top_m=self.m,
                        setup=st, planned=self.planned, arrivals=arrivals, samples=samples,
                        meta={"end_cloud": plain(self.planned.meta)})
