"""Planning: which members a config trains, in which trials, with which recipes and seeds."""
import pytest

from vip_ray.tune.config import ConfigCompositionError, compose
from vip_ray.tune.plan import ConfigError, plan_pool


def plan(*overrides, c=10, ch=1):
    return plan_pool(compose(list(overrides)), c, ch)


def test_default_vp_heterogeneous_pool():
    p = plan()
    assert p.name == "vp-heterogeneous-none-mnist5k"
    assert [m["id"] for m in p.members] == ["mobilenet_v2", "vp_v1", "vp_v2", "vp_v3", "vp_v4", "vp_v5"]
    assert [m["build"]["input_size"] for m in p.members] == [56, 24, 32, 40, 48, 56]  # ρ × 0.25
    assert len({m["seed"] for m in p.members}) == len(p.members)
    assert [s.name for s in p.stages] == ["members"] and all(len(g) == 1 for g in p.stages[0].groups)


@pytest.mark.parametrize("overrides,sizes", [
    (["train.mode=joint"], [6]),
    (["train.mode=joint", "train.group_size=4"], [4, 2]),
])
def test_joint_mode_groups_members(overrides, sizes):
    assert [len(g) for g in plan(*overrides).stages[-1].groups] == sizes


def test_vip_homogeneous_crops_pool_trains_teacher_first():
    p = plan("family=resnet50_slices", "shape=homogeneous", "diversity=crops", "train.kd=true")
    assert [s.name for s in p.stages] == ["teacher", "members"]
    assert p.stages[0].groups == [[p.members[0]]] and p.members[0]["role"] == "teacher"
    students = [m for m in p.members if m["role"] == "variant"]
    assert len(students) == 8 and {m["model"] for m in students} == {"resnet50_s3"}
    assert all(m["kd"] and m["init_from_teacher"] for m in students)
    assert sorted(m["build"]["crop_reduction"] for m in students) == [0.06, 0.06, 0.12, 0.12, 0.15, 0.15, 0.2, 0.2]
    assert [m["id"] for m in p.members if m["role"] == "baseline"] == ["resnet50_s3.B"]
    assert all(m["build"]["input_size"] == 32 for m in p.members)


def test_vip_teacher_phase_comes_from_train_teacher_keys():
    p = plan("family=resnet50_slices", "shape=homogeneous", "diversity=crops", "train.kd=true",
             "train.teacher_epochs=7", "train.teacher_lr=0.002", "train.teacher_schedule=cosine",
             "train.teacher_shift_px=3", "train.teacher_cycles=2")
    cycle = {"epochs": 7, "lr": 0.002, "freeze_backbone": False, "schedule": "cosine", "shift_px": 3}
    assert p.stages[0].phases == [{"name": "teacher", **cycle}, {"name": "teacher2", **cycle}]


def test_kd_both_trains_every_variant_twice():
    p = plan("family=resnet50_slices", "shape=homogeneous", "diversity=imbalance", "train.kd=both")
    ids = [m["id"] for m in p.members if m["role"] == "variant"]
    assert len(ids) == 20 and sum(i.endswith(".kd") for i in ids) == 10 and sum(i.endswith(".nokd") for i in ids) == 10


def test_vp_kd_uses_the_baseline_as_teacher():
    p = plan("train.kd=true")
    assert p.teacher_id == "mobilenet_v2" and p.stages[0].name == "teacher"
    assert all(m["kd"] for m in p.members if m["role"] == "variant")


@pytest.mark.parametrize("overrides,message", [
    (["train.kd=maybe"], "train.kd: 'maybe' is not allowed; allowed: true, false, both"),
    (["train.mode=pipelined"], "train.mode: 'pipelined' is not allowed; allowed: per_variant, joint"),
    (["shape=homogeneous", "shape.segment=9"], "shape.segment: 9 not in the family; allowed: [1, 2, 3, 4, 5]"),
    (["family.variants=[vp_v9]"], "family.variants: unknown model 'vp_v9'; allowed:"),
    (["family.phases=[{name:a,epochs:2,lr:0.1,schedule:step}]"],
     "family.phases[0].schedule: 'step' is not allowed; allowed: constant, cosine"),
    (["family.phases=[{name:a,epochs:2,lr:0.1,lrr:3}]"], "family.phases[0]: unknown key(s) ['lrr']"),
    (["family.phases=[{name:a,epochs:2,lr:0.1,shift_px:-1}]"], "family.phases[0].shift_px: -1 must be an integer >= 0"),
    (["train.kd=true", "train.teacher_schedule=step"],
     "train.teacher_schedule: 'step' is not allowed; allowed: constant, cosine"),
    (["train.kd=true", "train.teacher_shift_px=1.5"], "train.teacher_shift_px: 1.5 is not allowed; allowed: an integer"),
    (["train.kd=true", "train.teacher_epochs=0"], "train.teacher_epochs: 0 is not allowed; allowed: an integer >= 1"),
    (["train.kd=true", "train.teacher_cycles=0"], "train.teacher_cycles: 0 is not allowed; allowed: an integer >= 1"),
])
def test_bad_config_names_key_and_allowed_values(overrides, message):
    with pytest.raises(ConfigError) as e:
        plan(*overrides)
    assert message in str(e.value)


def test_unknown_group_option_lists_valid_ones():
    with pytest.raises(ConfigCompositionError) as e:
        compose(["family=vgg"])
    for option in ("vp", "vp_imagenet", "resnet50_slices"):
        assert option in str(e.value)


def test_class_parallel_confusability_plans_a_probe_then_one_group_model_per_group():
    p = plan("shape=class_parallel", "family.baselines=[]")
    assert p.name == "vp-class_parallel-none-mnist5k"
    assert [s.name for s in p.stages] == ["probe", "members"]
    probe = p.stages[0].groups[0][0]
    assert probe["id"] == "vp_v3.probe" and probe["build"]["num_classes"] == 10
    assert probe["holdout"] == {"fraction": 0.1, "seed": 0} and probe not in p.members
    assert p.stages[0].phases == p.stages[1].phases  # the probe trains like a member by default
    assert plan("shape=class_parallel", "shape.probe_epochs=3").stages[0].phases[0]["epochs"] == 3
    assert [m["id"] for m in p.members] == [f"vp_v3.g{i}" for i in range(5)]
    assert {m["role"] for m in p.members} == {"cp_group"}
    assert all(m["classes"] is None and m["build"]["num_classes"] == 3 for m in p.members)  # chosen by the probe
    assert len({m["seed"] for m in p.members}) == 5


def test_class_parallel_balanced_from_scratch_needs_no_probe_and_assigns_contiguous_groups():
    assert [s.name for s in plan("shape=class_parallel", "shape.grouping=balanced").stages] == ["probe", "members"]
    p = plan("shape=class_parallel", "shape.grouping=balanced", "shape.init=scratch", "shape.groups=3",
             "shape.model=vp_v1")
    assert [s.name for s in p.stages] == ["members"]
    assert [m["id"] for m in p.members] == ["mobilenet_v2", "vp_v1.g0", "vp_v1.g1", "vp_v1.g2"]  # + the baseline
    cp = [m for m in p.members if m["role"] == "cp_group"]
    assert [m["classes"] for m in cp] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [m["build"]["num_classes"] for m in cp] == [5, 4, 4]


def test_class_parallel_groups_take_diversity_recipes_round_robin():
    p = plan("shape=class_parallel", "shape.grouping=balanced", "diversity=crops", "family.baselines=[]")
    assert [m["id"] for m in p.members][:2] == ["vp_v3.g0.crop-06-center", "vp_v3.g1.crop-06-random"]


def test_class_parallel_settings_change_the_digest():
    base = plan("shape=class_parallel").digest()
    assert plan("shape=class_parallel", "shape.val_fraction=0.2").digest() != base
    assert plan("shape=class_parallel", "shape.other_weight=1.0").digest() != base
    assert plan("shape=class_parallel", "shape.init=scratch").digest() != base
    assert plan("shape=class_parallel").digest() == base


def test_assign_classes_fills_groups_largest_first_and_checks_sizes():
    from vip_ray.tune.plan import assign_classes

    p = plan("shape=class_parallel", "shape.groups=3", "family.baselines=[]")
    assign_classes(p, [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]])
    assert [m["classes"] for m in p.members] == [[3, 4, 5, 6], [0, 1, 2], [7, 8, 9]]
    with pytest.raises(ValueError, match="do not fit the planned sizes"):
        assign_classes(p, [[0, 1], [2, 3, 4, 5], [6, 7, 8, 9]])


@pytest.mark.parametrize("overrides,message", [
    (["shape.groups=11"], "shape.groups: 11 is not allowed for 10 classes; allowed: an integer in 2..10"),
    (["shape.groups=1"], "shape.groups: 1 is not allowed for 10 classes; allowed: an integer in 2..10"),
    (["shape.grouping=random"], "shape.grouping: 'random' is not allowed; allowed: confusability, balanced"),
    (["shape.model=vp_v9"], "shape.model: unknown model 'vp_v9'; allowed:"),
    (["shape.probe_epochs=0"], "shape.probe_epochs: 0 must be null (the family's phases) or an integer >= 1"),
    (["shape.init=pretrained"], "shape.init: 'pretrained' is not allowed; allowed: probe, scratch"),
    (["shape.val_fraction=1.5"], "shape.val_fraction: 1.5 must be a number in (0, 1)"),
    (["shape.other_weight=heavy"], "shape.other_weight: 'heavy' is not allowed; allowed: balanced, or a number > 0"),
    (["train.kd=true"], "train.kd: True is not allowed with shape=class_parallel; allowed: false"),
    (["diversity=imbalance"], "diversity: 'imbalance' uses class imbalance"),
])
def test_class_parallel_bad_config_names_key_and_allowed_values(overrides, message):
    with pytest.raises(ConfigError) as e:
        plan("shape=class_parallel", *overrides)
    assert message in str(e.value)


def test_a_teacher_only_pool_has_the_teacher_stage_alone():
    # COACH partitions only the ResNet50 teacher: no variants, and the teacher is the family's one baseline
    p = plan("family=resnet50_slices", "shape=heterogeneous", "family.variants=[]", "seed=2")
    assert [m["id"] for m in p.members] == ["resnet50_teacher"]
    assert [(s.name, len(s.groups)) for s in p.stages] == [("teacher", 1)]
    assert [ph["epochs"] for ph in p.stages[0].phases] == [6, 6]      # tune/config.yaml: 2 cycles of 6
