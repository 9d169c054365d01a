"""The trial body: phases, joint groups, exact resume from a checkpoint, determinism."""
import copy
import math

import numpy as np
import pytest
import torch

from vip_ray.data import load_dataset
from vip_ray.training.trainer import train_group
from vip_ray.tune.config import compose
from vip_ray.tune.plan import plan_pool


@pytest.fixture(scope="module")
def digits_setup():
    cfg = compose(["data=digits", "shape.segments=[1,2]", "family.baselines=[]", "diversity=filters"])
    data = load_dataset(cfg["data"])
    plan = plan_pool(cfg, data.num_classes, data.channels)
    return cfg, data, plan


def _group(cfg, plan, phases):
    return {"members": plan.members, "data": cfg["data"], "train": cfg["train"], "phases": phases, "threads": 1}


PHASES = [{"name": "a", "epochs": 1, "lr": 3e-3, "freeze_backbone": False},
          {"name": "b", "epochs": 1, "lr": 1e-3, "freeze_backbone": True}]


@pytest.mark.slow   # trains models (the fast lane: -m "not ray and not slow")
def test_resume_from_epoch_checkpoint_gives_identical_result(digits_setup):
    cfg, data, plan = digits_setup
    saved = []
    full = train_group(_group(cfg, plan, PHASES), data=data,
                       report=lambda row, state: saved.append(copy.deepcopy(state)))
    assert [h["phase"] for h in full["history"]] == ["a", "b"]
    resumed = train_group(_group(cfg, plan, PHASES), data=data, restore=saved[0])
    for mid in full["logits"]:
        np.testing.assert_array_equal(full["logits"][mid], resumed["logits"][mid])
    # same seed, fresh run: the same result again
    again = train_group(_group(cfg, plan, PHASES), data=data)
    for mid in full["logits"]:
        np.testing.assert_array_equal(full["logits"][mid], again["logits"][mid])


@pytest.mark.slow   # trains models (the fast lane: -m "not ray and not slow")
def test_frozen_phase_trains_only_the_head(digits_setup):
    cfg, data, plan = digits_setup
    saved = []
    train_group(_group(cfg, plan, PHASES), data=data, report=lambda row, state: saved.append(copy.deepcopy(state)))
    before, after = saved[0]["models"]["vp_v1.filters-0"], saved[1]["models"]["vp_v1.filters-0"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("head.") for k in changed), changed


def test_cosine_schedule_is_a_function_of_the_epoch():
    from vip_ray.training.trainer import _phase_lr

    phases = [{"name": "a", "epochs": 2, "lr": 0.1},
              {"name": "b", "epochs": 4, "lr": 1.0, "schedule": "cosine"}]
    assert [_phase_lr(phases, e) for e in (0, 1)] == [0.1, 0.1]
    assert _phase_lr(phases, 2) == pytest.approx(1.0)
    assert _phase_lr(phases, 4) == pytest.approx(0.05 + 0.95 * 0.5)      # half-way down the cosine
    assert _phase_lr(phases, 5) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(0.75 * math.pi)))


@pytest.mark.slow   # trains models (the fast lane: -m "not ray and not slow")
@pytest.mark.parametrize("diversity,forwards_per_batch", [("none", 0.5), ("filters", 2)])
def test_joint_kd_group_shares_one_teacher_forward_per_batch(tmp_path, monkeypatch, diversity, forwards_per_batch):
    """Over 2 epochs: students on plain images share the teacher's forward, and only the first epoch
    needs one (the frozen teacher's logits are kept per image): 1 forward per batch of epoch 1, i.e.
    0.5 per batch per epoch; filtered inputs are drawn anew: 2 (one per student) per batch per epoch."""
    from vip_ray.models import build_model
    from vip_ray.training import trainer

    cfg = compose(["data=digits", "shape=homogeneous", "shape.segment=1", "shape.n=2", "shape.baseline=false",
                   f"diversity={diversity}", "family.baselines=[]"])
    data = load_dataset(cfg["data"])
    students = [m for m in plan_pool(cfg, data.num_classes, data.channels).members if m["role"] == "variant"]
    assert len(students) == 2
    teacher_build = {"num_classes": 10, "in_channels": 1, "input_size": 24}
    torch.save(build_model("vp_v1", **teacher_build).state_dict(), tmp_path / "t.pt")
    calls = []
    original = trainer.load_teacher

    def counting(teacher, device):
        model = original(teacher, device)
        model.register_forward_hook(lambda *args: calls.append(1))
        return model

    monkeypatch.setattr(trainer, "load_teacher", counting)
    group = {"members": [{**m, "kd": True} for m in students], "data": cfg["data"], "train": cfg["train"],
             "phases": [{"name": "a", "epochs": 2, "lr": 1e-3}], "threads": 1,
             "teacher": {"model": "vp_v1", "build": teacher_build, "weights_path": str(tmp_path / "t.pt")}}
    result = train_group(group, data=data)
    batches = math.ceil(len(data.train_y) / int(cfg["train"]["batch_size"]))
    assert len(calls) == forwards_per_batch * 2 * batches
    assert result["teacher_seconds"] > 0


@pytest.mark.slow   # trains models (the fast lane: -m "not ray and not slow")
def test_training_runs_deterministic_with_its_thread_count_and_gives_the_callers_settings_back(digits_setup):
    cfg, data, plan = digits_setup
    seen = []
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    group = {**_group(cfg, plan, [{"name": "a", "epochs": 1, "lr": 3e-3}]), "members": plan.members[:1], "threads": 1}
    train_group(group, data=data, report=lambda row, state: seen.append(
        (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())))
    assert seen == [(1, True)]
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


@pytest.mark.slow   # trains models (the fast lane: -m "not ray and not slow")
def test_start_from_continues_a_trained_model(digits_setup, tmp_path):
    """A member with start_from begins with those weights, head included (a teacher's next cosine cycle)."""
    cfg, data, plan = digits_setup
    member = plan.members[0]
    first = train_group({**_group(cfg, plan, [{"name": "a", "epochs": 1, "lr": 3e-3}]), "members": [member]}, data=data)
    torch.save(first["weights"][member["id"]], tmp_path / "w.pt")
    zero_lr = [{"name": "b", "epochs": 1, "lr": 1e-30}]  # a step this small leaves every weight as it was
    again = train_group({**_group(cfg, plan, zero_lr), "members": [{**member, "start_from": str(tmp_path / "w.pt")}]},
                        data=data)
    w0, w1 = first["weights"][member["id"]], again["weights"][member["id"]]
    head = [k for k in w0 if k.startswith("head.")]
    assert head and all(torch.allclose(w0[k], w1[k]) for k in head)
