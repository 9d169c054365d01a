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
