"""The registered end–cloud strategies' common class (``coach``, ``neurosurgeon``, ``dads``,
``spinn``, ``jps``, one file each next to this one): options → :func:`setup` → the strategy's
planner → one SimPy pipeline run per replication (see :mod:`vip_ray.coach.runner`)."""
from __future__ import annotations

from typing import Callable, ClassVar

from vip_ray.coach.planners import plan_local
from vip_ray.coach.runner import EndCloudOptions, Planned, Setup, plain, run_replication, setup
from vip_ray.experiment.strategies.base import Context, Replication, Strategy
from vip_ray.pool.report import top_m


class EndCloudStrategy(Strategy):
    """An end device and a cloud server in a three-stage pipeline; a subclass sets ``planner``,
    ``planner(setup, options, top_m, log) -> Planned`` (``vip_ray.coach.planners``)."""

    Options: ClassVar[type[EndCloudOptions]] = EndCloudOptions
    uses_variants: ClassVar[bool] = False          # partitions one member; no variant pool needed
    planner: ClassVar[Callable[..., Planned]]

    def prepare(self, ctx: Context) -> None:
        self.setup: Setup = setup(ctx.scenario, ctx.pool, self.options, name=self.name, file=ctx.file, log=ctx.log)
        self.m = min(top_m(ctx.pool.num_classes), ctx.pool.num_classes)
        if self.setup.cloud_down:
            self.planned: Planned = plan_local(self.setup, self.m)
        else:
            self.planned = type(self).planner(self.setup, self.options, self.m, ctx.log)

    def replication(self, ctx, *, seed, replication, engine, chunk_requests):
        return Replication(self._run(seed, replication, chunk_requests))

    def _run(self, seed: int, replication: int, chunk_requests: int):
        table, devices, meta = run_replication(self.setup, self.planned, strategy=self.name, seed=seed,
                                               replication=replication, topm=self.m)
        for a in range(0, max(len(table), 1), chunk_requests):
            yield table.iloc[a:a + chunk_requests].reset_index(drop=True)
        st = self.setup
        meta = {**meta, "placement": {st.end_name: [f"{st.model.member.id}[end]", 0.0],
                                      st.cloud_name: [f"{st.model.member.id}[cloud]", 0.0]},
                "engine": "end-cloud pipeline (SimPy)", "end_cloud": plain(self.planned.meta)}
        return devices, plain(meta)
