"""Real hardware (issue 12 item 4): devices whose timing is *measured* on the node that holds them,
and ``vip-sim profile``.

Unit level: the live device model takes a measured pass's elapsed time as the job's compute, on
an exact timeline (no Ray). End to end: a second local Ray node with a custom resource stands in
for an edge board; it is profiled, then a scenario runs live with one measured device pinned to
it. That cluster lives in a subprocess, so the session's Ray is not touched.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from vip_ray.core.tables import Outcome
from vip_ray.core.world import Availability, DeviceSpec, LinkSpec, VariantSlot


def test_a_measured_device_takes_the_real_passes_elapsed_time_as_its_compute():
    """A worker on a 2 ms RTT, 8 Mbit/s link: inputs of 1000 B arrive 1 + 1 = 2 ms after the
    request; its profile says 50 ms, but the measured passes take 7 ms and then 3 ms. FIFO: job 0
    runs 2–9 ms, job 1 (arriving at 2 + 4 = 6 ms) waits and runs 9–12 ms; replies of 10 B take
    1 + 0.01 ms up: reply_at = 10.01 and 13.01 ms. Busy time 10 ms; no forward pass is started
    for the emulated path (nothing precomputed)."""
    from test_serve import _FakeClock   # the instant clock of the device-model tests

    from vip_ray.serve.emulated import EmulatedDevice, Job, Pending

    spec = DeviceSpec("board", (VariantSlot(0.0, 0, 0.050),), link=LinkSpec(0.002, 8e6), reply_bytes=10,
                      timing="measured")
    starts, precomputed = [], []
    elapsed = iter([0.007, 0.003])

    def measure(p, variant, done):
        starts.append(clock.now())
        done(next(elapsed))

    clock = _FakeClock(0)
    dev = EmulatedDevice(spec, 0, infer=lambda *a: precomputed.append(a), measure=measure)
    dev.reset(clock, seed=0)
    loop = asyncio.new_event_loop()
    try:
        pend = [Pending(("load", i), np.zeros((1, 2, 2), np.uint8), 1, loop) for i in range(2)]
        for i, t_req in enumerate((0.0, 0.004)):
            dev.offer(Job(pend[i], t_req + 0.001 + 8 * 1000 / 8e6, 1.0, False))
        clock.run(lambda: False)   # every timer (no availability process runs on for ever)
    finally:
        loop.close()
    assert starts == pytest.approx([0.002, 0.009])
    assert [p.jobs[0][1] for p in pend] == [Outcome.REPLIED, Outcome.REPLIED]
    assert [p.jobs[0][2] for p in pend] == pytest.approx([0.009 + 0.00101, 0.012 + 0.00101])
    assert dev.stats["busy_s"] == pytest.approx(0.010) and dev.stats["served"] == 2
    assert precomputed == []


def test_measured_timing_refuses_preemptive_availability():
    with pytest.raises(ValueError, match="timing.*'measured' needs availability always, crash or mtbf"):
        DeviceSpec("board", (VariantSlot(0.0, 0, 0.05),), timing="measured",
                   availability=Availability(kind="onoff", busy_mean_s=1.0, free_mean_s=1.0))
    with pytest.raises(ValueError, match="timing"):
        DeviceSpec("board", (VariantSlot(0.0, 0, 0.05),), timing="real")


_TWO_NODES = textwrap.dedent('''
    import json, sys, tempfile
    from pathlib import Path
    import ray
    from ray.cluster_utils import Cluster

    pool_root, scenario, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    temp = tempfile.mkdtemp(prefix="vrh", dir="/tmp")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                            "temp_dir": temp})
    board = cluster.add_node(num_cpus=1, resources={"test_board": 1})
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        from vip_ray.experiment.device_profile import profile_device
        prof = profile_device("small", out / "board.yaml", resources={"test_board": 1}, repeats=5, warmup=2,
                              root=pool_root, log=lambda s: None)
        import yaml
        latency = yaml.safe_load((out / "board.yaml").read_text())["latency_ms"]
        sc = yaml.safe_load(Path(scenario).read_text())
        sc["devices"][1].update(latency_ms=latency, timing="measured", ray_resources={"test_board": 1})
        (out / "scenario.yaml").write_text(yaml.safe_dump(sc))
        from vip_ray.experiment.run import run_scenario
        from vip_ray.serve import ServeOptions
        from vip_ray.serve.app import free_port
        from ray import serve
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        run = run_scenario(out / "scenario.yaml", overrides=[f"pool.root={pool_root}", "pool.name=small"],
                           out=out / "run", engine="serve", plots=False, log=lambda s: None,
                           serve_options=ServeOptions(dashboard=False))
        import pandas as pd
        dev = pd.read_parquet(run / "devices.parquet").set_index("device")
        summary = json.loads((run / "summary.json").read_text())
        print("RESULT " + json.dumps({"profile": {k: v for k, v in prof.items()}, "board_node": board.node_id,
                                       "latency_ms": latency, "groups": summary["serve"]["groups"],
                                       "served": dev["served"].to_dict(), "busy_s": dev["busy_s"].to_dict(),
                                       "variant": dev["variant"].to_dict()}))
    finally:
        try:
            from ray import serve
            serve.shutdown()
        except Exception:
            pass
        ray.shutdown()
        cluster.shutdown()
''')


def test_profile_a_stand_in_board_and_run_a_measured_device_on_it(small_pool, tmp_path):
    """The profile task runs on the board node (the one offering ``test_board``); the profile is
    a catalog entry with a latency per pool member and its provenance. Live, the measured device
    gets a replica of its own; it serves requests, and its busy time is the real passes' (not
    its profile's constant latency times the jobs served, which the emulated path would give)."""
    from vip_ray.scenario.schema import DeviceProfile

    scenario = tmp_path / "sc.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "board", "pool": {"name": "small"},
        "devices": [{"name": "master", "role": "master", "latency_ms": {"vp_v1": 20, "vp_v2": 20, "vp_v3": 20}},
                    {"name": "board", "latency_ms": {"vp_v1": 20, "vp_v2": 20, "vp_v3": 20}}],
        "network": {"rtt_ms": 2, "bandwidth_mbps": 100},
        "workload": {"arrival": "poisson", "rate_hz": 5, "requests": 15, "deadline_ms": 2000, "fallback": "local"},
        "strategy": {"name": "vp", "k": 2}, "seeds": {"base": 0, "replications": 1}}))
    proc = subprocess.run([sys.executable, "-c", _TWO_NODES, str(small_pool.parent), str(scenario), str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    res = json.loads(lines[-1][len("RESULT "):])
    prof = res["profile"]
    assert prof["node_id"] == res["board_node"]
    assert set(prof["members"]) == set(res["latency_ms"]) and all(v > 0 for v in res["latency_ms"].values())
    raw = yaml.safe_load((tmp_path / "board.yaml").read_text())
    entry = DeviceProfile(**raw)
    assert entry.service_dist == "lognormal" and "measured by vip-sim profile" in entry.source
    assert prof["torch"] in entry.source and prof["cpu"] in entry.source
    assert res["groups"]["dev-board"] == ["board"]
    served, busy = res["served"]["board"], res["busy_s"]["board"]
    assert served >= 10
    profile_s = 1e-3 * res["latency_ms"][res["variant"]["board"]]   # what the emulated path would charge per job
    assert busy > 0 and not np.isclose(busy, served * profile_s, rtol=1e-9)
