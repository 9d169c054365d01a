"""Closed forms on long runs (fast engine; it is bit-equal to the reference, see test_sim_engine)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vip_ray.sim import (Availability, DeviceSpec, LinkSpec, SimSpec, VariantSlot, WorkloadSpec,
                         finish_times, run)

NO_DELAY = LinkSpec(rtt_s=0.0, bandwidth_bps=math.inf)  # no network delay


def single_queue(service_dist, lam=5.0, mean_s=0.1, n=400_000, seed=11):
    d = DeviceSpec("q", (VariantSlot(0.0, 0, mean_s),), service_dist=service_dist,
                   jitter_cv=1.0 if service_dist == "exponential" else 0.0, link=NO_DELAY)
    res = run(SimSpec((d,), WorkloadSpec("poisson", rate_hz=lam, n_requests=n, deadline_s=1e9), seed=seed))
    return res.reply_at[:, 0] - res.arrival


def test_mm1_mean_sojourn():
    lam, mean_s = 5.0, 0.1                      # rho = 0.5
    w = single_queue("exponential", lam, mean_s)
    expect = 1.0 / (1.0 / mean_s - lam)         # 1 / (mu - lambda) = 0.2
    assert abs(w.mean() / expect - 1) < 0.03


def test_md1_mean_sojourn():
    lam, mean_s = 5.0, 0.1
    rho = lam * mean_s
    w = single_queue("deterministic", lam, mean_s)
    expect = mean_s + rho * mean_s / (2 * (1 - rho))   # Pollaczek-Khinchine, cv = 0 -> 0.15
    assert abs(w.mean() / expect - 1) < 0.03
    assert w.min() == pytest.approx(mean_s)


def test_answered_fraction_independent_availability():
    # Arrivals see each device's state: service (1 ms) << periods (seconds), a short deadline, and
    # drop_expired so the backlog of an unavailable period is skipped instead of delaying later
    # requests. Device i answers in time iff it is available at the arrival (up to O(deadline /
    # period) edge effects, ~0.1 % here), so P(>= 1 responder) = 1 - prod(1 - a_i).
    def d(name, av):
        return DeviceSpec(name, (VariantSlot(0.0, 0, 0.001),), availability=av, link=NO_DELAY, drop_expired=True)
    devs = (
        d("a", Availability("onoff", busy_mean_s=10.0, free_mean_s=10.0, mode="drop")),
        d("b", Availability("onoff", busy_mean_s=10.0, free_mean_s=30.0, mode="drop")),
        d("c", Availability("onoff", busy_mean_s=15.0, free_mean_s=5.0, distribution="weibull",
                            weibull_shape=2.0, mode="drop")),
        d("e", Availability("mtbf", mtbf_s=20.0, mttr_s=10.0)),
    )
    spec = SimSpec(devs, WorkloadSpec("poisson", rate_hz=4.0, duration_s=100_000.0, deadline_s=0.01), seed=2)
    res = run(spec)
    _, responded = finish_times(res, spec.workload.deadline_s)
    a = np.array([dv.availability.stationary for dv in devs])        # 0.5, 0.75, 0.25, 2/3
    expect = 1 - np.prod(1 - a)
    answered = responded.any(axis=1).astype(float)
    # batch means: requests are correlated within availability periods
    batches = np.array_split(answered, 50)
    m = np.array([b.mean() for b in batches])
    half = 2.68 * m.std(ddof=1) / math.sqrt(len(m))                 # 99 % (t, 49 dof)
    assert abs(answered.mean() - expect) < half, (answered.mean(), expect, half)
    assert half < 0.02                                               # the test has teeth
    # and each device on its own
    per = responded.mean(axis=0)
    np.testing.assert_allclose(per, a, atol=0.04)
    # the measured available time agrees too
    np.testing.assert_allclose(res.device_stats["available_s"] / (res.t_end - res.t_start), a, atol=0.04)


@pytest.mark.slow   # streams runs of millions of jobs
@pytest.mark.parametrize("engine,D,small,big,chunk,limit_mb", [
    ("loop", 2, 200_000, 2_000_000, 50_000, 20),    # holding the run: > 100 MB (reply_at alone 32 MB)
    ("numpy", 100, 30_000, 100_000, 5_000, 40),     # holding the run: > 130 MB (reply_at alone 80 MB)
    ("jit", 100, 30_000, 300_000, 5_000, 40),       # holding the run: > 390 MB (reply_at alone 240 MB)
])
def test_memory_flat_in_run_length(engine, D, small, big, chunk, limit_mb):
    # Streaming a long run through run_chunks must not grow peak RSS with the run length.
    code = textwrap.dedent(f"""
        import resource
        from vip_ray.sim import *
        def spec(n):
            devs = [DeviceSpec("loc", (VariantSlot(0.0, 0, 0.01),))]
            devs += [DeviceSpec(f"e{{d}}", (VariantSlot(0.0, 1, 0.02),), link=LinkSpec(0.002, 1e7),
                                availability=Availability("onoff", busy_mean_s=1, free_mean_s=4))
                     for d in range({D} - 1)]
            return SimSpec(tuple(devs), WorkloadSpec("poisson", rate_hz=20, n_requests=n), seed=1)
        def go(n):
            tot = 0
            for r in run_chunks(spec(n), "{engine}", chunk_requests={chunk}):
                tot += int((r.reply_at < 1e300).sum())
            return tot
        go({small})
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        go({big})
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((peak - base) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    growth_mb = float(out.stdout.strip().splitlines()[-1])
    assert growth_mb < limit_mb, growth_mb
