"""Time dilation of the live engine (vip_ray.serve.dilation, the emulated Clock) and the honest
HTTP path: pure units, no Ray. Expected values are worked by hand in the docstrings."""
from __future__ import annotations

import asyncio
import io
import time
from types import SimpleNamespace

import numpy as np
import pytest

from vip_ray.core.world import DeviceSpec, LinkSpec, VariantSlot, WorkloadSpec
from vip_ray.serve.dilation import Calibration, DilationError, _round_up, calibrate, choose
from vip_ray.serve.emulated import Clock


def test_the_clock_maps_emulated_seconds_to_dilated_loop_time():
    """X = 4: emulated 0.5 s is 2 s of loop time after the epoch; a wall instant 8 s after the
    epoch is emulated 2 s; 3 emulated s last 12 wall s."""
    loop = asyncio.new_event_loop()
    try:
        epoch = time.time()
        clock = Clock(epoch, loop, 4.0)
        assert clock.loop_time(0.5) == pytest.approx(clock.zero + 2.0)
        assert clock.emulated(epoch + 8.0) == pytest.approx(2.0)
        assert clock.wall_s(3.0) == 12.0
        h = clock.at(0.25, lambda: None)
        assert h.when() == pytest.approx(clock.zero + 1.0)
        h.cancel()
        fired = []
        clock.at(0.01, lambda: fired.append((loop.time() - clock.zero, clock.now())))

        async def wait():
            while not fired:
                await asyncio.sleep(0.005)
        loop.run_until_complete(asyncio.wait_for(wait(), 5.0))
        loop_elapsed, emulated_now = fired[0]
        assert loop_elapsed >= 0.04 - 1e-6       # 0.01 emulated s × 4, never earlier (later under load)
        assert emulated_now >= loop_elapsed / 4.0 and emulated_now == pytest.approx(loop_elapsed / 4.0, abs=1e-3)
    finally:
        loop.close()


def test_round_up_keeps_two_significant_digits_and_never_rounds_down():
    assert _round_up(3.9788) == 4.0
    assert _round_up(0.6631) == 0.67
    assert _round_up(12.01) == 13.0
    assert _round_up(0.05) == 0.05
    assert _round_up(250.0) == 250.0


def _cfg(threads=1, harness_ms=3.0, tolerance=0.05):
    """Two devices in one group: the master (no link) runs variant 0 in 10 ms; a worker on a
    2 ms RTT, 1 Mbit/s link runs variant 1 in 5 ms. Inputs 1000 B, replies 10 B, 10 requests/s."""
    master = DeviceSpec("m", (VariantSlot(0.0, 0, 0.010),), role="master")
    worker = DeviceSpec("w", (VariantSlot(0.0, 1, 0.005),), link=LinkSpec(0.002, 1e6), reply_bytes=10)
    return SimpleNamespace(
        devices=(master, worker), groups=(SimpleNamespace(devices=(0, 1)),),
        variants=(SimpleNamespace(id="v0"), SimpleNamespace(id="v1")),
        workload=WorkloadSpec("poisson", rate_hz=10.0, n_requests=10, deadline_s=0.05, input_bytes=1000),
        options=SimpleNamespace(inference_threads=threads, harness_ms=harness_ms, tolerance=tolerance))


def test_calibration_from_hand_worked_budgets():
    """Budgets: master 10 ms; worker 5 + 2 + 8·1010/1e6 s = 15.08 ms. Forward passes 4 ms (v0)
    and 6 ms (v1) on one thread, earliest need first: 4/10 = 0.4, then 10/15.08 = 0.6631 → fit
    0.67. Throughput: 10/s × 10 ms / 0.5 = 0.2. Harness: 3 ms / (0.05 × 15.08 ms) = 3.979 → 4.0.
    auto = max(1.5 × 0.6631, 1.5 × 0.2, 3.979) → 4.0."""
    cal = calibrate(_cfg(), {0: 0.004, 1: 0.006})
    assert cal.budget_ms == {"m": pytest.approx(10.0), "w": pytest.approx(15.08)}
    assert cal.workers == 1
    assert cal.fit_min == 0.67 and cal.throughput_min == 0.2 and cal.harness_min == 4.0
    assert cal.auto == 4.0 and cal.minimum == 0.67


def test_a_slow_host_needs_more_dilation_than_the_harness():
    """Forward passes of 40 and 60 ms: fit = 100 / 15.08 = 6.631 → 6.7; auto = 1.5 × 6.631 = 9.947 → 9.95
    → two digits up: 9.95 → 10 (ceil of 99.47 = 100 → 10.0)."""
    cal = calibrate(_cfg(), {0: 0.040, 1: 0.060})
    assert cal.fit_min == 6.7
    assert cal.auto == 10.0


def test_choose_refuses_what_the_host_cannot_honour_with_the_measured_minimum():
    cal = Calibration(forward_ms={"v0": 4.0}, budget_ms={"m": 10.0}, workers=1, fit_min=2.5, throughput_min=0.3,
                      harness_min=4.0, auto=4.0)
    assert choose("auto", cal) == 4.0
    assert choose(3.0, cal) == 3.0
    assert choose(1.0, cal) == 1.0          # real time is never refused (the run warns)
    with pytest.raises(DilationError, match=r"--time-dilation: 2 is too small.*X >= 2\.5.*v0 4\.00 ms"):
        choose(2.0, cal)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(DilationError, match="expected a number > 0 or 'auto'"):
            choose(bad, cal)


def test_send_on_schedule_issues_requests_at_dilated_instants():
    """X = 3: requests scheduled at emulated 0, 20 and 40 ms leave no earlier than 0, 60 and
    120 ms after the epoch; their lags are reported in emulated seconds (≥ 0)."""
    from vip_ray.serve.loadgen import send_on_schedule

    sent = []

    async def main():
        epoch = time.time() + 0.01

        async def send(i):
            sent.append(time.time() - epoch)
            return i
        return await asyncio.wait_for(send_on_schedule(np.array([0.0, 0.02, 0.04]), epoch, send, 3.0), 10.0)
    results, lags = asyncio.run(main())
    assert results == [0, 1, 2]
    assert sent[1] >= 0.06 - 1e-3 and sent[2] >= 0.12 - 1e-3
    assert (lags >= 0).all()
    np.testing.assert_allclose(lags, (np.array(sent) - 3.0 * np.array([0.0, 0.02, 0.04])) / 3.0, atol=5e-3)


def test_large_images_are_resized_to_the_pools_input_before_the_multicast():
    from PIL import Image

    from vip_ray.serve.ingress import decode_input

    buf = io.BytesIO()
    Image.fromarray(np.full((2000, 2000), 200, dtype=np.uint8)).save(buf, format="PNG")
    x = decode_input(buf.getvalue(), 1, (28, 28))
    assert x.shape == (1, 28, 28) and x.dtype == np.uint8 and (x == 200).all()
    big = io.BytesIO()
    np.save(big, np.zeros((3, 100, 60), dtype=np.uint8))
    assert decode_input(big.getvalue(), 1, (28, 28)).shape == (3, 28, 28)
    small = io.BytesIO()
    np.save(small, np.zeros((1, 8, 8), dtype=np.uint8))
    assert decode_input(small.getvalue(), 1, (28, 28)).shape == (1, 8, 8)   # never enlarged


def test_http_answers_judge_the_deadline_on_the_measured_latency():
    """A reply formed at emulated 30 ms but delivered at a measured 80 ms misses a 50 ms
    deadline; the top-k scores say what they are (VP's are scaled scores, not probabilities)."""
    from vip_ray.serve.ingress import Ingress

    cfg = SimpleNamespace(class_names=("a", "b", "c"), devices=(SimpleNamespace(name="m"),), workload=SimpleNamespace(
        fallback="none"), aggregation=SimpleNamespace(name="vp"), dilation=2.0)
    ing = Ingress.__new__(Ingress)
    ing.cfg, ing.D, ing.deadline = cfg, 1, 0.05
    res = {"request_id": 0, "responders": [0], "arrival_s": 1.0, "finish_s": 1.08, "ideal_finish_s": 1.03,
           "answered": True, "fallback": False, "prediction": 2, "top": [2, 0], "top_probs": [0.7, 0.2]}
    body, status = ing._http_answer(res)
    assert status == 200
    assert body["latency_ms"] == pytest.approx(80.0) and body["emulated_latency_ms"] == pytest.approx(30.0)
    assert body["deadline_met"] is False and body["time_dilation"] == 2.0
    assert body["score_kind"] == "vp_scaled_score" and body["top_k"][0] == {"label": 2, "class_name": "c",
                                                                           "score": 0.7}
    body, _ = ing._http_answer({**res, "finish_s": 1.04})
    assert body["deadline_met"] is True
