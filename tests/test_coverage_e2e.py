"""End to end, as a user runs them: `vip-sim run` with strategy vip, `compare` with cp, `sweep`,
every shipped scenario, output folders that stay whole-or-nothing when a command fails midway,
and `vip-sim serve` answering HTTP.

The simulator reads only a pool's bank, so most runs here use pools written by hand (logits
drawn from a seeded generator, no training): expected predictions are worked in numpy from
those logits, never by the aggregators under test.
"""
from __future__ import annotations

import io
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vip_ray import analysis
from vip_ray.cli import main
from vip_ray.experiment.run import run_scenario
from vip_ray.pool import write_pool
from vip_ray.scenario import load_scenario

REPO = Path(__file__).resolve().parent.parent
SCENARIO = "tests/data/three_devices.yaml"     # a master and two workers, everyone answers in time
N, C = 60, 4                                   # bank samples, classes


def _member(mid: str, role: str, rho: int, *, classes=None) -> dict:
    n_out = C if classes is None else len(classes) + 1
    rec = {"id": mid, "role": role, "model": "vp_v1", "family": "vp", "segment": 1, "input_size": rho,
           "nominal_input_size": rho * 4, "width": 0.35, "depth_multiplier": 4.0, "params": 1000,
           "macs": 2_000_000, "bytes": 4000, "recipe": {"name": "none"}, "seed": 1, "kd": False, "cut": "relu",
           "build": {"num_classes": n_out, "in_channels": 1, "input_size": rho}, "accuracy": 0.5, "top5": 1.0,
           "weights": f"weights/{mid}.pt"}
    if classes is not None:
        rec["classes"] = list(classes)
    return rec


def _manifest(name: str, members: list[dict]) -> dict:
    return {"name": name, "created": "now", "family": "vp", "shape": "heterogeneous", "diversity": "none",
            "data": {"name": "toy", "num_classes": C, "n_test": N}, "seed": 0, "members": members,
            "config": {}, "versions": {}}


#: class-parallel groups of the hand cp pool: which classes each group model owns
GROUPS = [(0, 1), (2,), (3,)]


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """A VP pool (three variants' logits) and a class-parallel pool (three groups) on the same
    samples, written by hand; returns the store, the labels and each pool's bank."""
    root = tmp_path_factory.mktemp("hand") / "pools"
    rng = np.random.default_rng(7)
    labels = np.arange(N) % C
    vp = [_member(f"vp_v{i}", "variant", 16 + 8 * i) for i in (1, 2, 3)]
    vp_logits = {m["id"]: rng.normal(size=(N, C)) + 1.5 * np.eye(C)[labels] for m in vp}
    write_pool(root, _manifest("hand", vp), {m["id"]: {} for m in vp}, vp_logits, labels, np.arange(N))
    cp = [_member(f"cp_g{g}", "cp_group", 24, classes=cl) for g, cl in enumerate(GROUPS)]
    group_probs, cp_rows = {}, {}
    for m, cl in zip(cp, GROUPS):
        z = rng.normal(size=(N, len(cl) + 1))
        for j, c in enumerate(cl):                # the group model leans towards its own true classes
            z[labels == c, j] += 2.0
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        group_probs[m["id"]] = p
        # the bank's row format (vip_ray.pool.store): own classes' log-probabilities, "other" spread evenly
        row = np.repeat(np.log(p[:, -1:] / (C - len(cl))), C, axis=1)
        row[:, list(cl)] = np.log(p[:, :-1])
        cp_rows[m["id"]] = row
    write_pool(root, _manifest("hand-cp", cp), {m["id"]: {} for m in cp}, cp_rows, labels, np.arange(N))
    return {"root": root, "labels": labels, "vp_logits": vp_logits, "group_probs": group_probs}


def _sets(pools, *extra: str) -> list[str]:
    items = [f"pool.root={pools['root']}", "pool.name=hand", "workload.input_bytes=784", "workload.requests=120",
             "seeds.replications=1", *extra]
    return [a for s in items for a in ("--set", s)]


def _cp_prediction(pools, samples: np.ndarray) -> np.ndarray:
    """Class parallelism by hand: class c is scored by its owner's probability of c; argmax."""
    score = np.zeros((len(samples), C))
    for g, cl in enumerate(GROUPS):
        p = pools["group_probs"][f"cp_g{g}"][samples]
        score[:, list(cl)] = p[:, :-1]
    return score.argmax(1)


# ----------------------------------------------------------------------------- strategy vip

def test_vip_predicts_the_average_of_the_responders_probabilities(pools, tmp_path, capsys):
    out = tmp_path / "vip"
    assert main(["run", SCENARIO, *_sets(pools, "strategy.name=vip", "strategy.k=all"), "--out", str(out)]) == 0
    req = analysis.load(out)
    dev = analysis.load(out, "devices")
    assert len(req) == 120 and req["answered"].all() and (req["n_responders"] == 3).all()
    ids = list(dev[dev["replication"] == 0]["variant"])
    assert sorted(ids) == ["vp_v1", "vp_v2", "vp_v3"]
    s = req["sample"].to_numpy()
    probs = [np.exp(pools["vp_logits"][v][s]) / np.exp(pools["vp_logits"][v][s]).sum(1, keepdims=True) for v in ids]
    want = np.mean(probs, axis=0).argmax(1)
    np.testing.assert_array_equal(req["prediction"].to_numpy(), want)
    assert req["correct_top1"].mean() == pytest.approx((want == pools["labels"][s]).mean())
    # full vectors on the wire: C float32 per networked worker
    assert (req["bytes_up"] == 2 * 4 * C).all()


# ----------------------------------------------------------------------------- compare with cp

def test_compare_runs_cp_beside_vp_and_cp_needs_every_group(pools, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", SCENARIO, "--workers", "1", "--strategies", "vp,cp", "--failed", "0,1", "--stealing", "none",
            "--out", str(out),
            *_sets(pools, "strategy.options.cp.pool=hand-cp")]
    assert main(args) == 0, capsys.readouterr().err
    table = pd.read_parquet(out / "compare.parquet").set_index(["strategy", "condition"])
    assert set(table.index) == {(s, c) for s in ("vp", "cp") for c in ("failed=0", "failed=1")}
    req = analysis.load(out / "points" / "cp" / "failed=0")
    assert req["answered"].all()
    s = req["sample"].to_numpy()
    want = _cp_prediction(pools, s)
    np.testing.assert_array_equal(req["prediction"].to_numpy(), want)
    assert table.loc[("cp", "failed=0"), "accuracy_top1"] == pytest.approx((want == pools["labels"][s]).mean())
    # each group replies with its classes' scores (float32): the two networked groups own 1 class each or 2
    dev = analysis.load(out / "points" / "cp" / "failed=0", "devices")
    remote = dev[(dev["replication"] == 0) & (dev["role"] != "master")]["variant"]
    size = {f"cp_g{g}": len(cl) for g, cl in enumerate(GROUPS)}
    assert (req["bytes_up"] == sum(4 * size[v] for v in remote)).all()
    # one worker down: a class has no owner, the master has no answer; VP still answers
    assert table.loc[("cp", "failed=1"), "answered"] == 0.0
    assert table.loc[("vp", "failed=1"), "answered"] == 1.0


# ----------------------------------------------------------------------------- sweep

def test_sweep_over_k_writes_one_row_per_point_with_h_k_bytes(pools, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", SCENARIO, "--workers", "1", "--grid", "strategy.k=1,2,all", "--out", str(out),
                 *_sets(pools)]) == 0
    table = pd.read_parquet(out / "sweep.parquet")
    assert list(table["strategy.k"]) == ["1", "2", "all"] and list(table["point"]) == [0, 1, 2]
    for i, per_worker in enumerate([1, 2 * (4 + 1), 4 * C]):   # VP eq. 3 by hand: h(1)=1, h(2)=10, all = 4·C
        req = analysis.load(out / "points" / f"{i:03d}")
        assert (req["bytes_up"] == 2 * per_worker).all()
    assert sorted(p.name for p in out.iterdir()) == ["grid.json", "points", "study.json", "sweep.parquet",
                                                     "sweep_strategy_k.png"]


# ----------------------------------------------------------------------------- whole or nothing

def _boom(*_a, **_k):
    raise RuntimeError("failed midway (test)")


@pytest.mark.parametrize("command,target", [
    ("run", "vip_ray.experiment.plots.run_plots"),           # after the tables are written
    ("compare", "vip_ray.experiment.compare.plot_compare"),  # after every point ran
    ("sweep", "vip_ray.experiment.sweep.plot_sweep"),        # after every point ran
])
def test_a_command_failing_midway_leaves_no_output_and_no_temporary_folder(pools, tmp_path, monkeypatch, command,
                                                                            target):
    monkeypatch.setattr(target, _boom)
    parent = tmp_path / "results"
    parent.mkdir()
    extra = {"run": [], "compare": ["--workers", "1", "--strategies", "vp,vip", "--failed", "0", "--stealing", "none"],
             "sweep": ["--workers", "1", "--grid", "strategy.k=1,2"]}[command]
    with pytest.raises(RuntimeError, match="failed midway"):
        main([command, SCENARIO, *extra, "--out", str(parent / "out"), *_sets(pools)])
    assert list(parent.iterdir()) == []


# ----------------------------------------------------------------------------- every shipped scenario

SHIPPED = sorted((REPO / "scenarios").glob("*.yaml"))


def _small(path: Path) -> list[str]:
    """Overrides that keep a scenario's run short: few requests (or a short duration), one replication."""
    wl = yaml.safe_load(path.read_text())["workload"]
    return ["workload.duration_s=3" if wl.get("duration_s") else "workload.requests=40", "seeds.replications=1"]


def _needs_own_pool(path: Path) -> bool:
    return "build" in (yaml.safe_load(path.read_text())["pool"] or {})


def test_every_shipped_scenario_loads():
    assert len(SHIPPED) == 9   # README table: 8 single-master scenarios and smart_city
    for path in SHIPPED:
        s = load_scenario(path)
        assert s.name == path.stem and s.devices


@pytest.mark.parametrize("path", [p for p in SHIPPED if not _needs_own_pool(p)], ids=lambda p: p.stem)
def test_every_scenario_on_the_shipped_pool_runs(path, tmp_path):
    """The scenarios on the shipped reference pool run as shipped (fewer requests; plots: the other tests)."""
    out = run_scenario(path, overrides=_small(path), out=tmp_path / "run", plots=False, log=lambda s: None)
    summary = json.loads((out / "summary.json").read_text())
    req = analysis.load(out)
    assert len(req) == summary["metrics"]["requests"]["per_replication"][0] > 0
    assert req["answered"].any()


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in SHIPPED if _needs_own_pool(p)], ids=lambda p: p.stem)
def test_every_scenario_with_its_own_pool_runs_on_the_shipped_one(path, tmp_path):
    """The scenarios whose pool is trained on first use (ResNet50 slices, hours) run their devices,
    network, workload and strategy on the shipped pool instead; COACH and its baselines partition
    its VP V3 with a small calibration set."""
    out = tmp_path / "run"
    opts = [f"strategy.options.{s}={{model: vp_v3, calibration_samples: 60}}"
            for s in ("coach",) if yaml.safe_load(path.read_text())["strategy"]["name"] == s]
    sets = [*_small(path), "pool.name=default", "pool.build=null", *opts]
    assert main(["run", str(path), "--out", str(out), *[a for s in sets for a in ("--set", s)]]) == 0
    assert analysis.load(out)["answered"].any()


# ----------------------------------------------------------------------------- vip-sim serve

def _lines(stream, q):
    for line in stream:
        q.put(line)
    q.put(None)


@pytest.mark.ray
@pytest.mark.slow
def test_vip_sim_serve_answers_http_then_stops(tmp_path):
    """`vip-sim serve` on the shipped pool, as a user starts it: it prints where to POST, answers
    a few requests with a class label from its responders, and stops after --for seconds."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_TMPDIR": "/tmp"}
    proc = subprocess.Popen([sys.executable, "-m", "vip_ray.cli", "serve", "scenarios/smart_home.yaml", "--for", "20"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    q: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, q), daemon=True).start()
    seen, url, shape = [], None, None
    try:
        end = time.monotonic() + 400                       # bounded: Ray and Serve start slowly on a loaded machine
        while url is None:
            line = q.get(timeout=max(1.0, end - time.monotonic()))
            assert line is not None, "".join(seen)
            seen.append(line)
            m = re.search(r"POST (\S+)/predict .*shape \((\d+), (\d+), (\d+)\)", line)
            if m:
                url, shape = m.group(1), tuple(int(x) for x in m.group(2, 3, 4))
        for i in range(3):
            img = np.full(shape, 40 * i, dtype=np.uint8)
            buf = io.BytesIO()
            np.save(buf, img)
            with urllib.request.urlopen(urllib.request.Request(url + "/predict", data=buf.getvalue()), timeout=60) as r:
                out = json.loads(r.read())
            assert r.status == 200 and 0 <= out["label"] < 10 and out["responders"], out
        assert proc.wait(timeout=300) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while (line := q.get(timeout=30)) is not None:
        seen.append(line)
    assert "stopped; last health" in "".join(seen)
