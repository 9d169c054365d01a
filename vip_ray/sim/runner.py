"""The simulator as an engine: a deployment in, the result tables out, per replication.

A fan-out runs on the kernel named by the engine (``fast``, ``loop``, ``numpy``, ``reference``;
:mod:`vip_ray.sim.engine`), chunk by chunk, and the master's tables come from
:mod:`vip_ray.core.master`; a chain runs on :mod:`vip_ray.sim.chain`, an end–cloud pipeline on
:mod:`vip_ray.sim.pipeline` (both SimPy).
"""
from __future__ import annotations

import numpy as np

from vip_ray.core.breakdown import JobsTable
from vip_ray.core.deployment import Chain, Deployment, FanOut, Pipeline
from vip_ray.core.engine import Engine, Replication
from vip_ray.core.master import device_table, request_table
from vip_ray.core.tables import sample_rng


class SimEngine(Engine):
    family = "sim"

    def replicate(self, dep: Deployment, *, replication: int, chunk_requests: int = 200_000) -> Replication:
        if isinstance(dep, FanOut):
            return Replication(self._fanout(dep, replication, chunk_requests))
        if isinstance(dep, Chain):
            from vip_ray.sim.chain import replicate_chain

            return Replication(replicate_chain(dep, replication=replication, chunk_requests=chunk_requests))
        if isinstance(dep, Pipeline):
            from vip_ray.sim.pipeline import replicate_pipeline

            return Replication(replicate_pipeline(dep, replication=replication, chunk_requests=chunk_requests))
        raise TypeError(f"the simulator cannot run a {type(dep).__name__}")

    def describe(self) -> dict:
        import simpy

        return {"name": self.name, "family": self.family, "simpy": simpy.__version__}

    def _fanout(self, dep: FanOut, replication: int, chunk_requests: int):
        from vip_ray.sim.engine import run_chunks

        if dep.world.masters:
            return (yield from self._multi_master(dep, replication, chunk_requests))

        if dep.control is not None:   # an online controller that moves variants re-simulates (vip_ray.control)
            from vip_ray.sim.engine import run

            dep = dep.control.plan_world(dep, lambda w: run(w, self.name))
        samples = sample_rng(dep.seed)  # which test sample each request carries
        totals, t_start, t_end, events, wall = None, 0.0, 0.0, 0, 0.0
        jobs = JobsTable(replication, dep.device_names)
        for i, chunk in enumerate(run_chunks(dep.world, self.name, chunk_requests=chunk_requests)):
            yield request_table(chunk, dep, replication=replication, sample_rng=samples)
            jobs.add(chunk)
            st = chunk.device_stats
            totals = {k: np.array(v, copy=True) for k, v in st.items()} if totals is None else \
                {k: totals[k] + st[k] for k in totals}
            t_start = chunk.t_start if i == 0 else t_start
            t_end = chunk.t_end
            events += chunk.events
            wall += chunk.wall_s
        devices = device_table(dep, totals, t_end - t_start, replication=replication)
        return devices, {"placement": dep.placement(), "events": events, "engine_wall_s": wall, **dep.meta,
                         **_jobs_meta(jobs)}, {"jobs": jobs.frame()}

    def _multi_master(self, dep: FanOut, replication: int, chunk_requests: int):
        """A multi-master world, cell by cell (:func:`vip_ray.core.world.cells`): each cell's
        requests in arrival order, the cells one after another (request ids numbered on across
        them), the rows of many small cells tabled in one pass (up to ``chunk_requests``); each
        master's figures in meta."""
        from vip_ray.core.master import PerMaster, request_table_cells
        from vip_ray.core.tables import empty_device_stats
        from vip_ray.core.world import cells
        from vip_ray.sim.engine import run_chunks

        samples = sample_rng(dep.seed)
        n_dev = len(dep.devices)
        totals = empty_device_stats(n_dev)
        span = np.zeros(n_dev)
        per_master = PerMaster([m.name for m in dep.world.masters])
        events, wall, offset, n_cells = 0, 0.0, 0, 0
        jobs = JobsTable(replication, dep.device_names)
        pending: list = []
        held = 0
        def table():  # the pending cells' rows, in one pass (cells of one size)
            rows = request_table_cells(pending, dep, replication=replication, sample_rng=samples)
            per_master.add(rows)
            return rows

        for devs, cell in cells(dep.world):
            n_cells += 1
            idx = np.asarray(devs)
            first = None
            n = 0
            for chunk in run_chunks(cell, self.name, chunk_requests=chunk_requests):
                if pending and pending[0][0].reply_at.shape[1] != len(devs):
                    yield table()
                    pending, held = [], 0
                pending.append((chunk, cell, offset))
                jobs.add(chunk, offset, devices=idx)
                held += len(chunk.arrival)
                n += len(chunk.arrival)
                if held >= chunk_requests:
                    yield table()
                    pending, held = [], 0
                for k, v in chunk.device_stats.items():
                    totals[k][idx] += v
                first = chunk.t_start if first is None else first
                span[idx] = chunk.t_end - first
                events += chunk.events
                wall += chunk.wall_s
            offset += n
        if pending:
            yield table()
        devices = device_table(dep, totals, span, replication=replication)
        return devices, {"placement": dep.placement(), "events": events, "engine_wall_s": wall, "cells": n_cells,
                         "masters": per_master.figures(), **dep.meta, **_jobs_meta(jobs)}, {"jobs": jobs.frame()}


def _jobs_meta(jobs: JobsTable) -> dict:
    """``jobs_left_out`` for ``summary.json`` when ``jobs.parquet`` could not hold every job."""
    return {"jobs_left_out": jobs.left_out} if jobs.left_out else {}
