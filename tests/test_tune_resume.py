"""An interrupted `python -m vip_ray.tune` run resumes: finished variants are not retrained."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from vip_ray.pool import Pool
from vip_ray.tune.config import compose
from vip_ray.tune.runner import train_pool

pytestmark = pytest.mark.slow


def test_sigint_then_rerun_resumes_without_retraining(ray_session, tmp_path):
    overrides = ["data=digits", "shape.segments=[1,2,3]", "family.baselines=[]",
                 "family.phases=[{name:scratch,epochs:3,lr:3e-3}]", "tune.max_concurrent=1",
                 f"pool.root={tmp_path}/pools", f"tune.storage={tmp_path}/tune", "tune.verbose=0",
                 "ray.dashboard=false", f"ray.temp_dir={tempfile.mkdtemp(prefix='vr', dir='/tmp')}"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    err = open(tmp_path / "stderr.txt", "w+")  # noqa: SIM115 - read back after the process ended
    proc = subprocess.Popen([sys.executable, "-m", "vip_ray.tune", *overrides], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=err)
    exp = tmp_path / "tune" / "vp-heterogeneous-none-digits" / "members"
    try:
        deadline = time.time() + 240
        while not list(exp.glob("000_vp_v1/checkpoint_*/final.pt")):  # first variant finished
            assert proc.poll() is None, "training exited before it could be interrupted"
            assert time.time() < deadline, "first trial did not finish in time"
            time.sleep(0.5)
        interrupted_at = time.time()
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        err.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == ("error: interrupted (Ctrl-C); run the same command again to resume: "
                                               "finished variants are kept, running ones continue from their last "
                                               "epoch")
    assert "Tuner.restore" not in stderr and "Traceback" not in stderr
    assert not (tmp_path / "pools" / "vp-heterogeneous-none-digits").exists()  # nothing half-written

    logs = []
    path = train_pool(compose(overrides[:-1]), log=logs.append)  # same config, joins the test cluster
    assert any("resuming" in line for line in logs)
    members = {m.id: m for m in Pool.load(path).manifest.members}
    assert set(members) == {"vp_v1", "vp_v2", "vp_v3"}
    assert members["vp_v1"].train["finished_at"] < interrupted_at        # kept, not retrained
    assert members["vp_v3"].train["finished_at"] > interrupted_at        # trained after the restart
    assert not exp.parent.exists()  # checkpoints are cleaned up once the pool is written


@pytest.mark.parametrize("registered, on_disk, expected", [
    ("checkpoint_000003", ["checkpoint_000003"], "checkpoint_000003"),   # the usual case
    ("checkpoint_000002", ["checkpoint_000003"], "checkpoint_000003"),   # Ctrl-C before Tune registered it
    (None, ["checkpoint_000001", "checkpoint_000010"], "checkpoint_000010"),  # newest by number
    ("checkpoint_000002", [], None),                                       # not finished: retrain
])
def test_the_final_checkpoint_is_found_where_the_worker_wrote_it(tmp_path, registered, on_disk, expected):
    from vip_ray.tune.runner import FINAL_FILE, _find_final

    trial = tmp_path / "000_vp_v1"
    for name in ["checkpoint_000002", *on_disk]:
        (trial / name).mkdir(parents=True, exist_ok=True)
    for name in on_disk:
        (trial / name / FINAL_FILE).write_bytes(b"x")
    found = _find_final(trial / registered if registered else None, trial)
    assert found == (trial / expected / FINAL_FILE if expected else None)
