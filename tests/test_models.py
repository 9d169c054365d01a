"""Model zoo: registry contract, the papers' size tables, ResNet50 slicing, input adapter, profiling."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
import torchvision
from torch import nn

from vip_ray.models import (InputAdapter, ModelSpec, VariantNet, build_model, crop_size, list_models, model_spec,
                            profile_model)
from vip_ray.models.profile import count_params
from vip_ray.models.registry import cached_weights_path
from vip_ray.models.resnet_slices import STUDENT_CUTS, relu_cut_points, resnet50_backbone, slice_backbone

CIFAR10 = 10

# VP Table II: name -> (#params, #MACs). V_1..V_7 are the seven Food-101 variants, so C = 101.
# V_im1..V_im7 are "exclusively designed for ImageNet": their counts only make sense with a
# 1000-class classifier (64*j*1000 weights are most of V_im1's 1.15M; at C=101 it has 0.65M).
VP_TABLE_II = {
    "vp_v1": (320e3, 10e6), "vp_v2": (330e3, 17e6), "vp_v3": (340e3, 27e6), "vp_v4": (360e3, 40e6),
    "vp_v5": (370e3, 54e6), "vp_v6": (390e3, 71e6), "vp_v7": (410e3, 112e6),
    "vp_vim1": (1.15e6, 17e6), "vp_vim2": (1.3e6, 30e6), "vp_vim3": (1.45e6, 47e6), "vp_vim4": (1.59e6, 69e6),
    "vp_vim5": (1.75e6, 95e6), "vp_vim6": (1.9e6, 125e6), "vp_vim7": (1.97e6, 196e6),
    "mobilenet_v2": (2.27e6, 300e6),
}
VP_TABLE_II_CLASSES = {"vp": 101, "vp_imagenet": 1000, "baseline": 101}
# VIP Table I, #params of Model 1..7 (ResNet50 students) and of the teacher.
VIP_TABLE_I = (0.12e6, 0.75e6, 3.2e6, 5.8e6, 9.1e6, 15.2e6, 19.8e6)
VIP_TEACHER_PARAMS = 23.5e6
STUDENTS = [f"resnet50_s{i}" for i in range(1, 8)]


@functools.cache
def built(name: str, num_classes: int = CIFAR10) -> VariantNet:
    """Shared across tests to keep the ResNet50 builds (~0.5 s each) down; tests must not modify weights."""
    return build_model(name, num_classes)


def last_leaf(module: nn.Module) -> nn.Module:
    return list(module.modules())[-1]


@pytest.fixture
def empty_hub(tmp_path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    yield tmp_path
    torch.hub.set_dir(previous)


# --- registry ---------------------------------------------------------------------------------

def test_families_partition_the_registry_in_table_order():
    families = ["vp", "vp_imagenet", "baseline", "resnet50_slices"]
    assert sum((list_models(f) for f in families), []) == list_models()
    assert [len(list_models(f)) for f in families] == [7, 7, 3, 8]
    assert list_models("vp") == [f"vp_v{i}" for i in range(1, 8)]
    assert list_models("resnet50_slices") == ["resnet50_teacher", *STUDENTS]


def test_model_spec_values():
    assert model_spec("vp_v3") == ModelSpec("vp_v3", "vp", "variant", 3, 160, 0.35, 6.0)
    assert model_spec("vp_vim7") == ModelSpec("vp_vim7", "vp_imagenet", "variant", 7, 320, 0.5, 20.0)
    assert model_spec("resnet50_teacher").kind == "teacher"
    assert model_spec("mobilenet_v2").kind == "baseline"
    with pytest.raises(dataclasses.FrozenInstanceError):
        model_spec("vp_v1").segment = 2


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError, match="vp_v1.*resnet50_s7"):
        build_model("vp_v8", 10)


#: nominal input size from which the forward check builds the network at a smaller one
FORWARD_SMALL_FROM = 224


@pytest.mark.parametrize("name", list_models())
def test_builds_and_forwards_any_input(name):
    spec = model_spec(name)
    # networks of 224 px and more are built at 64 px here: the same layers and input adapter at a
    # twelfth of the pixels (resnet101 and vgg16 at 224 px took most of this file's time)
    size = 64 if spec.input_size >= FORWARD_SMALL_FROM else spec.input_size
    model = built(name) if size == spec.input_size else build_model(name, CIFAR10, input_size=size)
    meta = model.meta
    assert (meta["name"], meta["family"], meta["kind"], meta["segment"]) == (name, spec.family, spec.kind, spec.segment)
    assert (meta["width"], meta["last_conv_factor"]) == (spec.width, spec.last_conv_factor)
    assert meta["input_size"] == model.input_size == size and meta["nominal_input_size"] == spec.input_size
    assert meta["num_classes"] == CIFAR10 and meta["pretrained"] is None
    assert meta["cut"] == ("relu" if name in STUDENTS else None)
    with torch.no_grad():
        grey = model.train()(torch.rand(2, 1, 28, 28))
        rgb = model.eval()(torch.rand(2, 3, 40, 40))
        features = model.features(torch.rand(2, 3, 40, 40))
    for logits in (grey, rgb):
        assert logits.shape == (2, CIFAR10) and torch.isfinite(logits).all()
    assert features.ndim == 2 and len(features) == 2
    assert {id(p) for p in model.head_parameters()}.isdisjoint(id(p) for p in model.backbone_parameters())


def test_input_size_and_scale():
    assert build_model("vp_v3", 10, input_size=50).input_size == 50
    assert build_model("vp_v3", 10, input_scale=0.2).input_size == 32
    assert build_model("vp_v3", 10, input_scale=0.01).input_size == 8


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="relu.*bn.*conv"):
        build_model("resnet50_s1", 10, cut="add")
    with pytest.raises(ValueError, match="students"):
        build_model("vp_v1", 10, cut="bn")
    with pytest.raises(ValueError, match="resnet50_teacher"):
        build_model("resnet50_s1", 10, teacher=built("vp_v1"))
    with pytest.raises(ValueError, match="in_channels"):
        build_model("vp_v1", 10, in_channels=2)


# --- VP Table II ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(VP_TABLE_II))
def test_vp_table_ii(name):
    paper_params, paper_macs = VP_TABLE_II[name]
    profile = profile_model(built(name, VP_TABLE_II_CLASSES[model_spec(name).family]))
    assert profile["macs"] == pytest.approx(paper_macs, rel=0.05)
    assert profile["params"] == pytest.approx(paper_params, rel=0.10)


def test_vp_last_conv_has_64j_filters_and_max_pool():
    model = built("vp_vim7")
    assert last_leaf(model.backbone).__class__ is nn.ReLU6
    assert [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)][-1].out_channels == 64 * 20
    assert isinstance(model.pool, nn.AdaptiveMaxPool2d) and isinstance(model.head[0], nn.Conv2d)


# --- VIP Table I: ResNet50 slices ---------------------------------------------------------------

def test_student_cuts_are_the_nearest_relu_cut_points():
    backbone = resnet50_backbone()
    candidates = {}
    for point in relu_cut_points(backbone):
        sliced, features = slice_backbone(backbone, *point)
        candidates[point] = count_params(sliced) + features * CIFAR10 + CIFAR10
    assert len(candidates) == 3 * (3 + 4 + 6 + 3)
    for target, chosen in zip(VIP_TABLE_I, STUDENT_CUTS):
        assert chosen == min(candidates, key=lambda point: abs(candidates[point] - target))


def test_vip_table_i_params():
    params = [profile_model(built(name))["params"] for name in STUDENTS]
    for measured, paper in zip(params, VIP_TABLE_I):
        assert measured == pytest.approx(paper, rel=0.15)
    assert params == sorted(set(params))
    assert count_params(built("resnet50_teacher").backbone) == pytest.approx(VIP_TEACHER_PARAMS, rel=0.05)
    assert params[-1] < profile_model(built("resnet50_teacher"))["params"]


@pytest.mark.parametrize("block, relu", [("layer2.1", "relu2"), ("layer1.0", "relu3")])
def test_slice_computes_the_teacher_prefix(block, relu):
    backbone = resnet50_backbone().eval()
    sliced, _ = slice_backbone(backbone, block, relu)
    stage, index = block.split(".")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        h = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
        for name in ("layer1", "layer2")[: int(stage[-1])]:
            blocks = list(backbone.get_submodule(name))
            for b in blocks[: int(index)] if name == stage else blocks:
                h = b(h)
        b = backbone.get_submodule(block)
        if relu == "relu3":
            expected = b(h)
        else:
            expected = b.relu(b.bn2(b.conv2(b.relu(b.bn1(b.conv1(h))))))  # residual dropped
        assert torch.allclose(sliced(x), expected, atol=1e-5)


@pytest.mark.parametrize("cut, last_type", [("bn", nn.BatchNorm2d), ("conv", nn.Conv2d)])
def test_bn_and_conv_cuts(cut, last_type):
    model = build_model("resnet50_s4", CIFAR10, cut=cut, input_size=32)
    assert isinstance(last_leaf(model.backbone), last_type) and model.meta["cut"] == cut
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, CIFAR10)
    relu_params = profile_model(built("resnet50_s4"))["params"]
    if cut == "bn":
        assert profile_model(model)["params"] == relu_params
    else:
        assert profile_model(model)["params"] == relu_params - 4 * 256  # its BN: weight, bias, mean, var


def test_students_copy_the_teacher_backbone():
    teacher = built("resnet50_teacher")
    student = build_model("resnet50_s4", CIFAR10, teacher=teacher)
    teacher_state, student_state = teacher.backbone.state_dict(), student.backbone.state_dict()
    assert "layer3.3.conv2.weight" in student_state and "layer3.3.conv3.weight" not in student_state
    for key, tensor in student_state.items():
        assert torch.equal(tensor, teacher_state[key]), key
    assert student_state["layer1.0.conv1.weight"].data_ptr() != teacher_state["layer1.0.conv1.weight"].data_ptr()


# --- pretrained weights -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet50_teacher", "mobilenet_v2"])
def test_require_pretrained_without_cached_file(empty_hub, name):
    weights = (torchvision.models.ResNet50_Weights if name == "resnet50_teacher"
               else torchvision.models.MobileNet_V2_Weights).DEFAULT
    with pytest.raises(FileNotFoundError, match=str(empty_hub / "checkpoints")) as error:
        build_model(name, 10, pretrained="require")
    assert str(cached_weights_path(weights)) in str(error.value)


def test_auto_pretrained_loads_only_a_cached_file(empty_hub):
    assert build_model("mobilenet_v2", 10, pretrained="auto").meta["pretrained"] is None
    reference = torchvision.models.mobilenet_v2().state_dict()
    path = cached_weights_path(torchvision.models.MobileNet_V2_Weights.DEFAULT)
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    model = build_model("mobilenet_v2", 10, pretrained="auto")
    assert model.meta["pretrained"] == path.name
    assert torch.equal(model.backbone.state_dict()["0.0.weight"], reference["features.0.0.weight"])
    assert build_model("mobilenet_v2", 10, pretrained="never").meta["pretrained"] is None


def test_require_pretrained_for_a_model_without_weights():
    with pytest.raises(ValueError, match="no pretrained"):
        build_model("vp_v1", 10, pretrained="require")


# --- input adapter -----------------------------------------------------------------------------

@pytest.mark.parametrize("reduction, side", [(0.0, 32), (0.06, 30), (0.12, 28), (0.15, 27), (0.20, 26), (0.999, 1)])
def test_crop_size(reduction, side):
    assert crop_size(32, reduction) == side


def normalised(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def test_center_crop_in_eval_is_deterministic():
    adapter = InputAdapter(26, crop_reduction=0.2, crop_position="random").eval()
    x = torch.rand(4, 3, 32, 32)
    out = adapter(x)
    assert torch.equal(out, adapter(x))
    assert torch.allclose(out, normalised(x[..., 3:29, 3:29]))  # crop to 26, no resize needed


def test_random_crop_in_train_differs_between_calls():
    torch.manual_seed(0)
    adapter = InputAdapter(26, crop_reduction=0.2, crop_position="random").train()
    x = torch.rand(4, 3, 32, 32)
    first, second = adapter(x), adapter(x)
    assert first.shape == second.shape == (4, 3, 26, 26)
    assert not torch.equal(first, second)
    center = InputAdapter(26, crop_reduction=0.2, crop_position="center").train()
    assert torch.equal(center(x), center(x))


def test_grey_input_is_repeated_and_resized():
    adapter = InputAdapter(40)
    grey = torch.rand(2, 1, 20, 20)
    out = adapter(grey)
    assert out.shape == (2, 3, 40, 40)
    assert torch.equal(out, adapter(grey.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match="channels"):
        adapter(torch.rand(2, 2, 20, 20))


# --- profiling ---------------------------------------------------------------------------------

def test_profile_of_a_hand_made_network():
    backbone = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=4),   # depthwise
        nn.Conv2d(4, 6, 1, stride=2),              # pointwise, 8x8 -> 4x4
    )
    head = nn.Sequential(nn.Flatten(), nn.Linear(6, 5))
    model = VariantNet(InputAdapter(8), backbone, nn.AdaptiveAvgPool2d(1), head).train()
    profile = profile_model(model)
    macs = 8 * 8 * 4 * (3 * 3 * 3) + 8 * 8 * 4 * (3 * 3) + 4 * 4 * 6 * 4 + 6 * 5
    params = 3 * 4 * 9 + 4 * 4 + (4 * 9 + 4) + (4 * 6 + 6) + (6 * 5 + 5)  # BN: weight, bias, running mean, var
    assert profile == dict(macs=macs, params=params, bytes=4 * params + 8)  # + int64 num_batches_tracked
    assert model.training
