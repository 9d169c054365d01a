"""Studies on Ray (``vip-sim sweep|compare --workers N --address ADDR --resume``): a sweep on a
two-node local cluster with a worker killed in the middle gives the very tables of the in-process
run; a resumed study runs only the points it lacks; bad workers, addresses and resumes are refused
in one line before any work.

The cluster test drives the real command line in a subprocess against a real two-node cluster
(``ray.cluster_utils.Cluster``) started here; it never connects this test process to Ray, so it
does not disturb the session's cluster of other modules."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from vip_ray.cli import main
from vip_ray.experiment.compare import run_compare
from vip_ray.experiment.study import StudyError, StudyOptions
from vip_ray.experiment.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]
SCENARIO = str(REPO / "scenarios/smart_home.yaml")  # the shipped default pool: nothing to train
QUIET = {"log": lambda s: None}
#: the SimPy reference kernel: slow enough (≈ 1 s per task) for a kill to land while tasks run
SLOW = ["workload.requests=3000", "seeds.replications=1"]
GRID = ["workload.deadline_ms=20,30,40,60"]


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Every parquet table of a study folder, by relative path."""
    return {str(p.relative_to(folder)): pd.read_parquet(p) for p in sorted(folder.rglob("*.parquet"))}


def _assert_same_tables(a: Path, b: Path) -> None:
    ta, tb = _tables(a), _tables(b)
    assert sorted(ta) == sorted(tb) and len(ta) > 1
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], check_exact=True, obj=name)


@pytest.fixture(scope="module")
def sequential_sweep(tmp_path_factory):
    """The in-process sweep (``--workers 1``): the reference every distributed run must equal."""
    out = tmp_path_factory.mktemp("seq") / "sweep"
    return run_sweep(SCENARIO, GRID, overrides=SLOW, out=out, engine="reference", **QUIET)


@pytest.fixture(scope="module")
def two_nodes():
    """A real two-node Ray cluster on this machine (head + one more node, one CPU each), always
    shut down. This process does not connect to it: the studies run in subprocesses."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "temp_dir": "/tmp/vrst"})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen([sys.executable, "-m", "vip_ray.cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _running_tasks(prefix: str) -> dict[int, str]:
    """pid -> title of the Ray workers running a task whose name starts with ``prefix`` (a
    worker titles itself ``ray::<task name>`` while it runs one)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                title = (d / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(f"ray::{prefix}"):
                out[int(d.name)] = title
    return out


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the study did not end within {timeout} s:\n{out[-3000:]}")
    return out


@pytest.mark.ray
def test_sweep_on_two_nodes_with_a_worker_killed_equals_the_in_process_run(two_nodes, sequential_sweep, tmp_path):
    out = tmp_path / "sweep"
    sets = [arg for s in SLOW for arg in ("--set", s)]
    proc = _cli(["sweep", SCENARIO, "--grid", *GRID, *sets, "--engine", "reference",
                 "--address", two_nodes.address, "--workers", "2", "--out", str(out)])
    killed = None
    deadline = time.monotonic() + 240  # bounded: the study's first task starts once the CLI is up
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        running = _running_tasks("sweep points/")
        if running:
            pid, killed = next(iter(running.items()))
            os.kill(pid, signal.SIGKILL)  # the worker dies in the middle of its task
        else:
            time.sleep(0.02)
    log = _finish(proc)
    assert killed is not None, f"no study task was seen running:\n{log[-3000:]}"
    print(f"killed the worker running {killed!r}; the study's log:\n{log}")
    assert proc.returncode == 0, log[-3000:]
    assert "4 points × replications = 4 Ray tasks, 2 at a time" in log
    assert "will be retried" in log  # Ray's own word that the killed worker's task ran again
    # nothing lost, nothing duplicated: every point once, each table equal to the in-process run's
    table = pd.read_parquet(out / "sweep.parquet")
    assert table["point"].tolist() == [0, 1, 2, 3] and table["replication"].tolist() == [0, 0, 0, 0]
    assert table["workload.deadline_ms"].tolist() == [20, 30, 40, 60]
    _assert_same_tables(sequential_sweep, out)
    for point in range(4):
        requests = pd.read_parquet(out / f"points/{point:03d}/requests.parquet")
        assert len(requests) == 3000 and requests["request_id"].is_unique


@pytest.mark.ray
def test_compare_on_two_nodes_equals_the_in_process_run(two_nodes, tmp_path):
    args = ["--strategies", "single,vp", "--failed", "0,2", "--stealing", "none", "--requests", "400"]
    here = tmp_path / "here"
    assert main(["compare", SCENARIO, *args, "--workers", "1", "--out", str(here)]) == 0
    proc = _cli(["compare", SCENARIO, *args, "--address", two_nodes.address, "--out", str(tmp_path / "ray")])
    log = _finish(proc)
    assert proc.returncode == 0, log[-3000:]
    assert "4 points × replications = 12 Ray tasks, 2 at a time" in log  # 2 strategies × 2 conditions × 3 seeds
    _assert_same_tables(here, tmp_path / "ray")
    table = pd.read_parquet(here / "compare.parquet")
    assert table[["strategy", "condition", "replication"]].values.tolist() == [
        [s, c, r] for s in ("single", "vp") for c in ("failed=0", "failed=2") for r in range(3)]


class _StopAt:
    """A log that raises KeyboardInterrupt (as Ctrl-C does) when the study starts point ``n``."""

    def __init__(self, n: int):
        self.n, self.points = n, 0

    def __call__(self, line: str) -> None:
        if line.startswith("[sweep] point "):
            self.points += 1
            if self.points == self.n:
                raise KeyboardInterrupt


def test_an_interrupted_study_resumes_with_only_the_points_it_lacks(tmp_path):
    sets = ["workload.requests=300", "seeds.replications=2"]
    grid = ["workload.deadline_ms=20,50,80"]
    whole = run_sweep(SCENARIO, grid, overrides=sets, out=tmp_path / "whole", **QUIET)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(SCENARIO, grid, overrides=sets, out=out, log=_StopAt(3))
    partial = tmp_path / ".cut.partial"
    assert not out.exists() and sorted(p.name for p in (partial / "points").iterdir()) == ["000", "001"]
    (partial / "points/000/mark").write_text("written by the first run")
    with pytest.raises(StudyError, match="--resume to continue it"):
        run_sweep(SCENARIO, grid, overrides=sets, out=out, **QUIET)  # without --resume: refused, kept
    lines: list[str] = []
    run_sweep(SCENARIO, grid, overrides=sets, out=out, log=lines.append, study=StudyOptions(resume=True))
    assert "[sweep] resuming: 2 of 3 points are written already; running the other 1" in lines
    assert [x for x in lines if x.startswith("[sweep] point ")] == ["[sweep] point workload.deadline_ms=80"]
    assert (out / "points/000/mark").exists() and not partial.exists()
    _assert_same_tables(whole, out)
    # a resume of the finished study does nothing
    lines.clear()
    run_sweep(SCENARIO, grid, overrides=sets, out=out, log=lines.append, study=StudyOptions(resume=True))
    assert lines == [f"[study] {out} is complete already: nothing to resume"]


def test_a_failure_before_any_point_is_finished_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_sweep(SCENARIO, ["workload.deadline_ms=20,50"], overrides=["workload.requests=100"],
                  out=tmp_path / "s", log=_StopAt(1))
    assert list(tmp_path.iterdir()) == []


def _cpus() -> int:
    """What the refusal must name: the connected cluster's CPUs if this process has Ray, else
    this machine's usable cores (counted here from the kernel's affinity mask)."""
    import ray

    if ray.is_initialized():
        return int(ray.cluster_resources()["CPU"])
    return len(os.sched_getaffinity(0))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on leaving: nobody listens there


@pytest.mark.parametrize("command", ["sweep", "compare"])
def test_bad_workers_address_and_resume_are_one_line_before_any_work(command, tmp_path, capsys):
    base = ["sweep", SCENARIO, "--grid", "workload.deadline_ms=20,50"] if command == "sweep" else \
        ["compare", SCENARIO, "--strategies", "vp", "--failed", "0", "--stealing", "none"]
    port = _closed_port()
    n = _cpus()
    cases = [(["--workers", "0"], f"--workers 0: allowed 1..{n} ({n} CPUs of "),
             (["--workers", str(n + 1)], f"--workers {n + 1}: allowed 1..{n} ({n} CPUs of "),
             (["--address", f"127.0.0.1:{port}"], f"--address '127.0.0.1:{port}': cannot reach a Ray head there"),
             (["--resume"], "--resume needs --out DIR")]
    for extra, expected in cases:
        t0 = time.monotonic()
        assert main([*base, *extra, "--out", str(tmp_path / "x")] if extra != ["--resume"] else [*base, *extra]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err
        assert time.monotonic() - t0 < 60  # refused up front, not after a study (generous for a loaded machine)
    assert not (tmp_path / "x").exists() and not any(tmp_path.iterdir())


def test_resume_of_another_study_names_what_differs(tmp_path, capsys):
    out = tmp_path / "s"
    run_sweep(SCENARIO, ["workload.deadline_ms=20,50"], overrides=["workload.requests=100"], out=out, **QUIET)
    before = json.loads((out / "study.json").read_text())
    assert main(["sweep", SCENARIO, "--grid", "workload.deadline_ms=20,60", "--set", "workload.requests=100",
                 "--out", str(out), "--resume", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert 'grid differs (there: {"workload.deadline_ms": [20, 50]}; now: {"workload.deadline_ms": [20, 60]})' in err
    assert json.loads((out / "study.json").read_text()) == before
    assert main(["sweep", SCENARIO, "--grid", "workload.deadline_ms=20,50", "--set", "workload.requests=101",
                 "--out", str(out), "--resume", "--workers", "1"]) == 2
    assert "overrides differs" in capsys.readouterr().err


def test_compare_resumes_too(tmp_path):
    args = {"overrides": ["workload.requests=200", "seeds.replications=1"], "failed": [0, 1], "steal": None,
            "plots": False}
    whole = run_compare(SCENARIO, ["vp"], out=tmp_path / "whole", **args, **QUIET)
    stop = {"n": 0}

    def log(line: str) -> None:
        if line.startswith("[compare] point "):
            stop["n"] += 1
            if stop["n"] == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_compare(SCENARIO, ["vp"], out=tmp_path / "cut", **args, log=log)
    assert (tmp_path / ".cut.partial/points/vp/failed=0/summary.json").exists()
    lines: list[str] = []
    run_compare(SCENARIO, ["vp"], out=tmp_path / "cut", **args, log=lines.append, study=StudyOptions(resume=True))
    assert [x for x in lines if x.startswith("[compare] point ")] == ["[compare] point vp failed=1"]
    _assert_same_tables(whole, tmp_path / "cut")
