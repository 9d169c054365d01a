"""Reference engine: idiomatic SimPy, one process per (request, device) job.

Links are objects in the style of SimPy's ``Cable`` example, devices hold a FIFO resource, each
device's availability is its own process that interrupts the job in service. This engine is the
oracle the tests compare every other engine against; it materialises the whole run in memory.
"""
from __future__ import annotations

import time

import numpy as np
import simpy

from ..entities import Device, Link, Master, SharedMedium, availability_process
from ..random_streams import Arrivals, DeviceDraws, Windows, availability_durations, shared_medium_steps
from ..result import SimResult, empty_device_stats
from vip_ray.core.world import SimSpec, arrival_workload


class CountingEnvironment(simpy.Environment):
    """``simpy.Environment`` that counts processed events."""

    def __init__(self, initial_time=0):
        super().__init__(initial_time)
        self.processed = 0

    def step(self):
        self.processed += 1
        return super().step()


def draw_inputs(device_specs, workload, seed):
    """Inter-arrival gaps and every device's per-request draws (down loss, compute multiplier, up loss)."""
    arr = Arrivals(workload, seed)
    gl = []
    while not arr.done:
        gl.append(arr.take(1 << 16)[0])
    gaps = np.concatenate(gl) if gl else np.empty(0)
    draws = ([], [], [])
    for d, dev in enumerate(device_specs):
        down, mult, up = DeviceDraws(dev, d, seed).take(len(gaps))
        draws[0].append(down)
        draws[1].append(mult.tolist())
        draws[2].append(up)
    return gaps, draws


def build_world(env, device_specs, seed):
    """Device and link entities, with each device's availability process started."""
    devices = [Device(env, dev, d) for d, dev in enumerate(device_specs)]
    links = [Link(env, dev.link) if dev.link is not None else None for dev in device_specs]
    for d, dev in enumerate(devices):
        env.process(availability_process(env, dev, availability_durations(device_specs[d].availability, d, seed)))
    return devices, links


def collect_stats(devices, device_specs, lost_down, lost_up, seed, t_end):
    stats = empty_device_stats(len(devices))
    for d, dev in enumerate(devices):
        for k, v in dev.stats.items():
            stats[k][d] = v
        stats["lost_down"][d] = lost_down[d]
        stats["lost_up"][d] = lost_up[d]
        stats["available_s"][d] = Windows(device_specs[d].availability, d, seed).available_time(0.0, t_end)
    return stats


def run_reference(spec: SimSpec) -> SimResult:
    t0 = time.perf_counter()
    gaps, draws = draw_inputs(spec.devices, arrival_workload(spec), spec.seed)
    R = len(gaps)
    env = CountingEnvironment()
    devices, links = build_world(env, spec.devices, spec.seed)
    steps = shared_medium_steps(spec)
    medium = SharedMedium(env, *steps) if steps is not None else None
    master = Master(env, spec, devices, links, medium, draws, gaps.tolist())
    env.process(master.arrivals())
    env.run(until=master.all_done)

    last_end = max([dev.last_end for dev in devices], default=0.0)
    t_end = max(float(master.arrival[-1]) + spec.workload.deadline_s, last_end) if R else 0.0
    stats = collect_stats(devices, spec.devices, master.lost_down, master.lost_up, spec.seed, t_end)
    return SimResult(
        request_id=np.arange(R, dtype=np.int64), arrival=master.arrival, reply_at=master.reply_at,
        variant=master.variant, outcome=master.outcome, bytes_down=master.bytes_down,
        bytes_up=master.bytes_up, device_stats=stats, events=env.processed,
        wall_s=time.perf_counter() - t0, t_start=0.0, t_end=t_end,
        device_names=tuple(d.name for d in spec.devices), engine="reference", ready_at=master.ready_at,
        start_at=master.start_at, end_at=master.end_at, paused_s=master.paused_s)
