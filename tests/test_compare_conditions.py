"""`vip-sim compare` on an end–cloud scenario settles which conditions each strategy can run
before any pool is opened or trained: the end–cloud pipeline models an always-available cloud, so
the cycle-stealing condition (every worker lends only idle cycles) is skipped for it with a note,
and a strategy that can run no condition at all is refused with one line and exit status 2.

Every case names a pool that does not exist: had the conditions been checked only after the pool
was opened, the answer would be "no pool" (or minutes of training), not the line expected here.
"""
from __future__ import annotations

import pytest

from vip_ray.cli import main
from vip_ray.experiment.compare import _conditions, runnable
from vip_ray.experiment.run import checked_strategy
from vip_ray.scenario import ScenarioError, load_scenario
from vip_ray.strategies import with_strategy

END_CLOUD = "scenarios/end_cloud_drops.yaml"      # the NX (master) and one worker: the cloud GPU
NO_POOL = ["pool.name=no-such-pool-guard", "pool.build=null"]


def test_end_cloud_strategies_skip_cycle_stealing_with_a_note_and_keep_the_failures():
    base = load_scenario(END_CLOUD, NO_POOL)
    strategies = ["coach", "neurosurgeon", "single"]
    instances = {s: checked_strategy(with_strategy(base, s), END_CLOUD, "reference") for s in strategies}
    notes: list[str] = []
    todo = runnable(strategies, instances, _conditions(base, None, (10.0, 30.0)), END_CLOUD, notes.append)
    # one worker: failed=0 (the cloud up), failed=1 (the cloud crashed from t = 0: run locally), stealing
    assert [(s, c) for s, c, _, _ in todo] == [
        ("coach", "failed=0"), ("coach", "failed=1"),
        ("neurosurgeon", "failed=0"), ("neurosurgeon", "failed=1"),
        ("single", "failed=0"), ("single", "failed=1"), ("single", "stealing")]
    assert len(notes) == 2
    for s, note in zip(("coach", "neurosurgeon"), notes):
        assert note.startswith(f"compare: {s} skips condition stealing:") and "cloud: onoff" in note


def test_a_strategy_that_runs_no_condition_is_refused_before_any_pool(capsys):
    """The end device itself lends only idle cycles: no condition can run the pipeline."""
    sets = [*NO_POOL, "devices.0.availability={kind: onoff, busy_mean_s: 1, free_mean_s: 3}"]
    argv = ["compare", END_CLOUD, "--strategies", "coach", "--failed", "0..1"]
    assert main([*argv, *[a for s in sets for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "strategy 'coach' runs none of the conditions (failed=0, failed=1, stealing)" in err[0]
    assert "no-such-pool-guard" not in err[0]


def test_the_end_cloud_refusal_names_the_unavailable_end_device():
    base = load_scenario(END_CLOUD, [*NO_POOL, "devices.0.availability={kind: onoff, busy_mean_s: 1, free_mean_s: 3}"])
    coach = checked_strategy(with_strategy(base, "coach"), END_CLOUD, "reference")
    assert coach.refuses(base) == "the end device nx is not always available (onoff)"
    with pytest.raises(ScenarioError, match="runs none of the conditions"):
        runnable(["coach"], {"coach": coach}, _conditions(base, [0], None), END_CLOUD, lambda s: None)


def test_the_sim_family_name_is_an_engine_a_strategy_is_checked_against():
    """``sim`` names the simulator family (any kernel): it is not refused as an unknown engine."""
    base = load_scenario(END_CLOUD)
    assert checked_strategy(with_strategy(base, "coach"), END_CLOUD, "sim").name == "coach"


@pytest.mark.parametrize("command", ["run", "sweep", "compare"])
def test_a_battery_on_an_end_cloud_device_is_refused_before_any_pool(command, capsys, tmp_path):
    """The end–cloud pipeline models devices that are always up: a battery there would never run
    out, with no word. ``run`` and ``sweep`` refuse it with one line naming the key, before the
    (missing) pool is looked for; ``compare`` runs no condition of it, so it is refused too."""
    sets = [*NO_POOL, "strategy.name=neurosurgeon", "devices.0.battery_wh=5"]
    extra = {"run": [], "sweep": ["--grid", "workload.deadline_ms=50,100"],
             "compare": ["--strategies", "neurosurgeon", "--failed", "0"]}[command]
    out = tmp_path / "out"
    assert main([command, END_CLOUD, "--out", str(out), *extra, *[a for s in sets for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "devices (nx).battery_wh: the end–cloud pipeline models always available devices and drains no " \
           "battery; allowed: unset (mains powered)" in err[0]
    assert END_CLOUD in err[0] and "no-such-pool-guard" not in err[0]
    assert not out.exists() and not list(tmp_path.iterdir())


def test_run_refuses_an_end_device_that_is_not_always_up_before_any_pool(capsys):
    sets = [*NO_POOL, "strategy.name=neurosurgeon", "devices.0.availability={kind: mtbf, mtbf_s: 10, mttr_s: 1}"]
    assert main(["run", END_CLOUD, *[a for s in sets for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {END_CLOUD}: the end device nx is not always available (mtbf)"]
