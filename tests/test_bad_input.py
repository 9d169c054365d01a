"""Every bad input to `vip-sim` and `python -m vip_ray.tune` gets one clear line and exit status 2,
before any long work (no pool trained, no Ray started, no output or temporary folder left);
Ctrl-C and SIGTERM end a command with one line, exit 130 / 143, and nothing half-written.

The runs use a pool written by hand (three variants' logits on 40 samples of 4 classes): the
simulator reads only the bank, so no training is needed. Every case also names a pool that
does not exist: were the input not refused first, the answer would be "no pool", not the line
the test expects.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vip_ray.core.results import atomic_directory
from vip_ray.cli import main
from vip_ray.pool import write_pool

REPO = Path(__file__).resolve().parent.parent
SCENARIO = "tests/data/three_devices.yaml"
SMART_HOME = "scenarios/smart_home.yaml"   # five devices: a master and four workers
NO_POOL = ["--set", "pool.name=no-such-pool-guard"]


def _member(mid: str, rho: int, depth: float) -> dict:
    return {"id": mid, "role": "variant", "model": mid, "family": "vp", "segment": 1, "input_size": rho,
            "nominal_input_size": rho * 4, "width": 0.35, "depth_multiplier": depth, "params": 1000,
            "macs": 2_000_000, "bytes": 4000, "recipe": {"name": "none"}, "seed": 1, "kd": False, "cut": "relu",
            "build": {"num_classes": 4, "in_channels": 1, "input_size": rho}, "accuracy": 0.5, "top5": 1.0,
            "weights": f"weights/{mid}.pt"}


@pytest.fixture(scope="module")
def hand_pool(tmp_path_factory) -> list[str]:
    """``--set`` arguments that point the test scenario at a hand-written pool."""
    root = tmp_path_factory.mktemp("hand") / "pools"
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 4
    members = [_member(f"vp_v{i}", 16 + 8 * i, 3.0 + i) for i in (1, 2, 3)]
    logits = {m["id"]: rng.normal(size=(40, 4)) + 2 * np.eye(4)[labels] for m in members}
    manifest = {"name": "hand", "created": "now", "family": "vp", "shape": "heterogeneous", "diversity": "none",
                "data": {"name": "toy", "num_classes": 4, "n_test": 40}, "seed": 0, "members": members,
                "config": {}, "versions": {}}
    write_pool(root, manifest, {m["id"]: {} for m in members}, logits, labels, np.arange(40))
    return [f"pool.root={root}", "pool.name=hand", "workload.input_bytes=784"]


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


# --- one line, exit 2, nothing written -----------------------------------------------------------------------

CASES = [
    (["sweep", SMART_HOME, "--grid", "failed_devices=4..0"], "--grid failed_devices: '4..0' is an empty range"),
    (["sweep", SMART_HOME, "--grid", "failed_devices=0..9"], "failed_devices: 5 is out of range; allowed: 0..4"),
    (["sweep", SMART_HOME, "--grid", "failed_devices=0..x"], "'0..x' is not a range like 0..4"),
    (["sweep", SMART_HOME, "--grid", "strategy.k=1,0"], "strategy.k: expected an integer >= 1 or 'all', got 0"),
    (["sweep", SMART_HOME, "--grid", "strategy.k=1", "--grid", "strategy.k=2"], "strategy.k is already a grid axis"),
    (["compare", SMART_HOME, "--failed", "4..0"],
     "--failed: '4..0' is an empty range (A..B counts up from A to B); did you mean 0..4?"),
    (["compare", SMART_HOME, "--failed", "0..7"], "--failed: [5, 6, 7] out of range; allowed: 0..4"),
    (["compare", SMART_HOME, "--failed", "two"], "--failed: 'two' is not a range like 0..4 or a list like 0,2,4"),
    (["compare", SMART_HOME, "--stealing", "0:30"], "--stealing '0:30': expected BUSY:FREE mean seconds > 0"),
    (["compare", SMART_HOME, "--requests", "0"], "workload.requests: must be >= 1, got 0"),
    (["compare", SMART_HOME, "--strategies", "vp,VIP"],
     "unknown strategy 'VIP' (names are lowercase: did you mean 'vip'?); allowed: "),
    (["run", SMART_HOME, "--set", "failed_devices=2"], "failed_devices is not a scenario key; use --failed-devices N"),
    (["sweep", SMART_HOME, "--set", "failed_devices=2", "--grid", "strategy.k=1,2"],
     "failed_devices is not a scenario key; use --grid failed_devices=0..4"),
    (["compare", SMART_HOME, "--set", "failed-devices=2"], "failed_devices is not a scenario key; use --failed 0..4"),
    (["run", SMART_HOME, "--set", "strategy.name=VP"],
     "unknown strategy 'VP' (names are lowercase: did you mean 'vp'?); allowed: "),
    (["run", SMART_HOME, "--set", "strategy.name=Bad-Name"], "strategy.name: 'Bad-Name' is not a strategy name"),
    (["run", SMART_HOME, "--set", "placement.policy=nope"],
     "placement.policy: unknown placement policy 'nope'; allowed: capacity, diverse, round_robin"),
    (["run", SMART_HOME, "--set", "strategy.aggregator=mean"],
     "strategy.aggregator: unknown aggregator 'mean'; allowed: cp, first, majority, vip, vp"),
    (["run", SMART_HOME, "--set", "devices[2].profile=nope"], "devices[2].profile: unknown device profile 'nope'"),
    (["run", SMART_HOME, "--set", "devices.2.profile=nope"], "devices[2].profile: unknown device profile 'nope'"),
    (["run", SMART_HOME, "--failed-devices", "5"], "failed_devices: 5 is out of range; allowed: 0..4"),
    (["run", SMART_HOME, "--engine", "serve", "--devices-per-replica", "0"], "serve options:"),
]


@pytest.mark.parametrize("args,line", CASES, ids=[" ".join(a[:1] + a[2:]) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the scenario paths are the repository's
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), *NO_POOL]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line
    assert line in err, err
    assert "Traceback" not in err + captured.out and "no-such-pool-guard" not in err  # refused before the pool
    assert not any(tmp_path.iterdir())  # no output folder, no hidden temporary one


def test_strategy_names_in_messages_keep_their_brackets(capsys):
    """A message with [..] (a key path, a list) is printed as it is, not read as markup."""
    assert main(["run", SMART_HOME, "--set", "devices[9].profile=x", *NO_POOL]) == 2
    assert "override 'devices[9].profile=x': index 9 is out of range" in capsys.readouterr().err


def test_json_output_for_scripts(capsys):
    import json

    assert main(["strategies", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"vp", "vip", "single", "mp", "cp"} <= set(listed)


def test_pools_list_json_and_unsqueezed_table_in_a_pipe(hand_pool, tmp_path, capsys):
    import json
    import pathlib

    root = hand_pool[0].split("=", 1)[1]
    assert main(["pools", "list", "--root", root, "--json"]) == 0   # in this process: a process costs seconds
    listed = json.loads(capsys.readouterr().out)
    store = [p for p in listed["pools"] if p["source"] == "store"]
    assert listed["locations"]["store"] == str(pathlib.Path(root).resolve()) and [p["name"] for p in store] == ["hand"]
    assert store[0]["members"] == 3 and store[0]["status"] == "ok"
    r = subprocess.run([sys.executable, "-m", "vip_ray.cli", "pools", "list", "--root", root],
                       capture_output=True, text=True, timeout=300, check=False)  # stdout is a pipe here
    row = next(line for line in r.stdout.splitlines() if "hand" in line and "heterogeneous" in line)
    for cell in ("hand", "vp", "heterogeneous", "none", "toy", "3", "ok"):  # every column on one line
        assert cell in row


# --- python -m vip_ray.tune ----------------------------------------------------------------------------------

TUNE_CASES = [
    (["train.epochs=-1"], "train.epochs: no such key; epochs live under family.phases"),
    (["+train.epochs=3"], "train.epochs: no such key; epochs live under family.phases"),
    (["train.batch_size=-1"], "train.batch_size: -1 is not allowed; allowed: an integer >= 1"),
    (["resources.cpu=0"], "resources.cpu: 0 is not allowed; allowed: a number > 0"),
    (["train=3"], "train: is a section, not a value (3)"),
    (["family.phases=[{name:s,epochs:-1,lr:1e-3}]"], "family.phases[0].epochs: -1 must be an integer >= 0"),
    (["diversity=nope"], "diversity=nope: no such option; allowed (the files in"),
    (["data=cifar10", "data.root=/nonexistent/cifar"], "data.download=true"),
    (["train.kd=sometimes"], "allowed: true, false, both"),
]


def _tune_refuses(stdout: str, stderr: str, line: str, tmp_path) -> None:
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert line in stderr and "Traceback" not in stderr + stdout
    assert "Ray" not in stderr + stdout  # refused before a cluster was started
    assert not any(tmp_path.iterdir())   # nothing written


def _tune_args(args, tmp_path) -> list[str]:
    return [*args, f"pool.root={tmp_path}/pools", f"tune.storage={tmp_path}/tune", "ray.dashboard=false"]


@pytest.mark.slow   # a fresh process that imports torch and Hydra
def test_tune_bad_input_is_one_line_before_ray_as_a_command(tmp_path):
    """``python -m vip_ray.tune`` itself (a process of its own: exit status, nothing on stdout)."""
    args, line = TUNE_CASES[2]
    r = subprocess.run([sys.executable, "-m", "vip_ray.tune", *_tune_args(args, tmp_path)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 2, r.stderr
    _tune_refuses(r.stdout, r.stderr, line, tmp_path)


@pytest.mark.parametrize("args,line", TUNE_CASES, ids=[" ".join(a) for a, _ in TUNE_CASES])
def test_tune_bad_input_is_one_line_before_ray(args, line, tmp_path, capsys):
    """Every case through the command's ``main`` in this process (a process each costs seconds of
    imports); an exception it did not turn into the line would fail the test here."""
    import ray

    from vip_ray.tune.__main__ import main as tune_main

    up = ray.is_initialized()   # another module's session may hold Ray already: the command must not start it
    assert tune_main(_tune_args(args, tmp_path)) == 2
    out = capsys.readouterr()
    _tune_refuses(out.out, out.err, line, tmp_path)
    assert ray.is_initialized() == up


# --- stops: Ctrl-C and SIGTERM -------------------------------------------------------------------------------

def _wait_for(predicate, proc, what: str, timeout: float = 300.0) -> None:
    """Bounded wait for an event (not a fixed sleep): the machine may be loaded."""
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the command ended before {what}: {proc.communicate()}"
        assert time.monotonic() < end, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.1)


@pytest.mark.parametrize("command,signum,status,line", [
    ("run", signal.SIGINT, 130, "error: interrupted (Ctrl-C); nothing half-written was kept"),
    ("run", signal.SIGTERM, 143, "error: terminated (SIGTERM); nothing half-written was kept"),
    ("compare", signal.SIGTERM, 143, "error: terminated (SIGTERM); nothing half-written was kept"),
    ("sweep", signal.SIGINT, 130, "error: interrupted (Ctrl-C); nothing half-written was kept"),
])
def test_a_stopped_command_says_one_line_and_leaves_no_folder(hand_pool, tmp_path, command, signum, status, line):
    out = tmp_path / "out"
    # enough requests that the simulation is still going when the signal comes
    sets = _sets([*hand_pool, "workload.requests=10000000", "seeds.replications=1"])
    extra = {"run": [], "compare": ["--strategies", "vp,vip", "--stealing", "none", "--workers", "1"],
             "sweep": ["--grid", "strategy.k=1,2", "--workers", "1"]}[command]
    proc = subprocess.Popen([sys.executable, "-m", "vip_ray.cli", command, SCENARIO, *extra, *sets, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the hidden temporary folder appears once the inputs are checked and the pool is open (a
        # study's is .out.partial, kept only once it holds finished points: none here)
        _wait_for(lambda: any(p.name.startswith((".out.tmp-", ".out.partial")) for p in tmp_path.iterdir()), proc,
                  "the run started")
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # a process that ends by the signal itself (-signum here) reads as 128 + signum to a shell,
    # as the exit status does: both are what a user sees. Seen twice on 2026-12-03 for the sweep
    # (after its one line; why it does not always exit with the status is not understood yet)
    assert proc.returncode in (status, -signum), stderr
    assert stderr.strip().splitlines()[-1] == line and "Traceback" not in stderr + stdout
    assert not any(tmp_path.iterdir())  # no output folder, no hidden temporary folder


# --- the atomic-directory helper ------------------------------------------------------------------------------

def test_atomic_directory_publishes_whole_or_nothing(tmp_path):
    final = tmp_path / "out"
    with atomic_directory(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-") and not final.exists()
        (tmp / "a.txt").write_text("a")
    assert (final / "a.txt").read_text() == "a" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    with pytest.raises(RuntimeError, match="half way"), atomic_directory(tmp_path / "other") as tmp:
        (tmp / "b.txt").write_text("b")
        raise RuntimeError("half way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    with atomic_directory(final, replace=True, durable=True) as tmp:
        (tmp / "c.txt").write_text("c")
    assert sorted(p.name for p in final.iterdir()) == ["c.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_is_removed_on_sigterm(tmp_path):
    """SIGTERM's default ends Python without `finally`; inside the helper it cleans up first."""
    script = ("import sys, time; from pathlib import Path; from vip_ray.core.results import atomic_directory\n"
              "with atomic_directory(Path(sys.argv[1])) as tmp:\n"
              "    (tmp / 'part.txt').write_text('x'); print('ready', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert len(list(tmp_path.iterdir())) == 1  # the hidden temporary folder
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Terminated" in stderr and proc.returncode == 1   # the uncaught exception ends the script
    assert not any(tmp_path.iterdir())


# --- Ctrl-C while Ray starts ----------------------------------------------------------------------------------

_START_RAY = """
import os, signal, sys, threading, time
from pathlib import Path
from vip_ray.interrupts import start_ray

temp = sys.argv[1]

def ctrl_c_once_ray_is_starting():
    end = time.monotonic() + 300
    while not any(Path(temp).glob("session_*")) and time.monotonic() < end:  # ray.init has begun its processes
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=ctrl_c_once_ray_is_starting, daemon=True).start()
try:
    start_ray(num_cpus=1, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    print("started", flush=True)
    time.sleep(600)
except KeyboardInterrupt:
    import ray
    print("interrupted", "up" if ray.is_initialized() else "down", flush=True)
    ray.shutdown()   # the signal came too late (Ray was up): end what this process started
"""


def _processes_using(path: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if path in line and "ps -eo" not in line]


@pytest.mark.slow
def test_ctrl_c_while_ray_starts_leaves_no_ray_process():
    import tempfile

    for _ in range(3):  # on a loaded machine Ray may finish starting before the signal lands: try again
        temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")  # Ray puts Unix sockets here: keep it short
        r = subprocess.run([sys.executable, "-c", _START_RAY, temp], capture_output=True, text=True, timeout=300,
                           check=False, env={**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"})
        if not r.stdout.startswith("started"):
            break
    assert r.stdout.split() == ["interrupted", "down"], r.stdout + r.stderr  # raised after Ray was shut down
    end = time.monotonic() + 120  # processes exit asynchronously once killed: a bounded wait
    while _processes_using(temp) and time.monotonic() < end:
        time.sleep(0.2)
    assert _processes_using(temp) == []


_WORKER_NICENESS = """
import os, sys
import ray
from vip_ray.interrupts import start_ray

start_ray(num_cpus=1, include_dashboard=False, _temp_dir=sys.argv[1], log_to_driver=False)
try:
    print(os.nice(0), ray.get(ray.remote(lambda: os.nice(0)).remote(), timeout=600))
finally:
    ray.shutdown()
"""


@pytest.mark.slow
def test_a_cluster_we_start_runs_its_workers_at_our_priority():
    """Ray's default (nice 15) starves the emulated devices and the trials beside any busy job."""
    import tempfile

    # a cluster of its own, started with Ray's default niceness unless start_ray changes it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_worker_niceness", "RAY_ADDRESS")}
    temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")
    r = subprocess.run([sys.executable, "-c", _WORKER_NICENESS, temp], capture_output=True, text=True, timeout=600,
                       check=False, env={**env, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    driver, worker = map(int, r.stdout.split())
    assert worker == driver, r.stderr


@pytest.mark.parametrize("command,extra", [
    ("run", []), ("sweep", ["--grid", "workload.deadline_ms=20,50"]),
    ("compare", ["--strategies", "vp", "--failed", "0"]), ("validate", []),
])
def test_an_output_folder_that_cannot_be_written_is_one_line_before_any_work(command, extra, tmp_path, capsys):
    """``--out`` under a plain file (no folder can be made there, whoever runs it): one line
    naming the folder and why, exit status 2, before a pool is opened or Ray is started (validate
    would start Ray), and nothing written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "result"
    assert main([command, "scenarios/smart_home.yaml", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {out}: cannot write a folder there ({blocker} is not a folder); pick another --out"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
