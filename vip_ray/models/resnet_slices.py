"""VIP's ResNet50 teacher and its seven students sliced out of it (VIP paper, Table I).

A student is the teacher's backbone cut after one ReLU, plus global average pooling and a new
linear head. Cuts after ``relu1`` / ``relu2`` of a Bottleneck drop that block's residual branch.
Students keep the teacher's module names, so ``teacher=`` copies weights by state-dict key.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import takewhile

from torch import nn
from torchvision.models import ResNet50_Weights, resnet50
from torchvision.models.resnet import Bottleneck

from vip_ray.models.registry import ModelParts, ModelSpec, VariantNet, register_model

STEM = ("conv1", "bn1", "relu", "maxpool")
STAGES = ("layer1", "layer2", "layer3", "layer4")
NOMINAL_INPUT_SIZE = 224
TEACHER = "resnet50_teacher"
# Cut point of student s_i: (Bottleneck, ReLU inside it), the candidate of ``relu_cut_points``
# whose parameter count (C=10 head, BN running stats counted) is nearest to VIP Table I.
STUDENT_CUTS = (            # params at C=10   VIP Table I
    ("layer1.1", "relu1"),  # 0.103M    0.12M
    ("layer2.1", "relu1"),  # 0.678M    0.75M
    ("layer3.1", "relu1"),  # 3.24M     3.2M
    ("layer3.3", "relu2"),  # 6.07M     5.8M
    ("layer4.0", "relu1"),  # 9.10M     9.1M
    ("layer4.1", "relu1"),  # 15.7M     15.2M
    ("layer4.2", "relu1"),  # 20.1M     19.8M
)


def resnet50_backbone(state_dict: dict | None = None) -> nn.Sequential:
    """torchvision ResNet50 up to (without) avgpool, keeping its module names."""
    net = resnet50()
    if state_dict is not None:
        net.load_state_dict(state_dict)
    return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in STEM + STAGES))


def relu_cut_points(backbone: nn.Sequential) -> list[tuple[str, str]]:
    """Every Bottleneck ReLU in forward order; ``relu3`` is the block output, after the residual add."""
    return [(f"{stage}.{index}", f"relu{k}")
            for stage in STAGES for index in range(len(backbone.get_submodule(stage))) for k in (1, 2, 3)]


def _unrolled(block: Bottleneck) -> nn.Sequential:
    """The block's main branch as a chain, without the residual; names match the block's weights."""
    return nn.Sequential(OrderedDict([
        ("conv1", block.conv1), ("bn1", block.bn1), ("relu1", nn.ReLU(inplace=True)),
        ("conv2", block.conv2), ("bn2", block.bn2), ("relu2", nn.ReLU(inplace=True)),
        ("conv3", block.conv3), ("bn3", block.bn3),
    ]))


def slice_backbone(backbone: nn.Sequential, block: str, relu: str, cut: str = "relu") -> tuple[nn.Sequential, int]:
    """``backbone`` up to ``block``'s ``relu`` (or the BN / conv feeding it, by ``cut``), and its output channels.

    The slice shares modules with ``backbone``.
    """
    stage, index = block.split(".")
    bottleneck = backbone.get_submodule(block)
    step = relu.removeprefix("relu")
    if relu == "relu3" and cut == "relu":
        last = bottleneck  # the whole block, residual included
    else:
        chain = _unrolled(bottleneck)
        names = [name for name, _ in chain.named_children()]
        last = chain[: names.index(f"{cut}{step}") + 1]
    blocks = list(backbone.get_submodule(stage))[: int(index)] + [last]
    before = list(takewhile(lambda named: named[0] != stage, backbone.named_children()))
    sliced = nn.Sequential(OrderedDict(before + [(stage, nn.Sequential(*blocks))]))
    return sliced, bottleneck.get_submodule(f"conv{step}").out_channels


def _linear_head(features: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))


@register_model(ModelSpec(TEACHER, "resnet50_slices", "teacher", None, NOMINAL_INPUT_SIZE, 1.0, 1.0),
                weights=ResNet50_Weights.DEFAULT)
def resnet50_teacher(spec: ModelSpec, num_classes: int, state_dict: dict | None) -> ModelParts:
    return ModelParts(resnet50_backbone(state_dict), nn.AdaptiveAvgPool2d(1), _linear_head(2048, num_classes))


@register_model(*(ModelSpec(f"resnet50_s{i}", "resnet50_slices", "variant", i, NOMINAL_INPUT_SIZE, 1.0, 1.0)
                  for i in range(1, len(STUDENT_CUTS) + 1)), sliced=True)
def resnet50_student(spec: ModelSpec, num_classes: int, cut: str, teacher: VariantNet | None) -> ModelParts:
    backbone, features = slice_backbone(resnet50_backbone(), *STUDENT_CUTS[spec.segment - 1], cut=cut)
    if teacher is not None:
        if teacher.meta.get("name") != TEACHER:
            raise ValueError(f"teacher must be a built {TEACHER}, got {teacher.meta.get('name')!r}")
        teacher_state = teacher.backbone.state_dict()
        backbone.load_state_dict({key: teacher_state[key] for key in backbone.state_dict()})
    return ModelParts(backbone, nn.AdaptiveAvgPool2d(1), _linear_head(features, num_classes))
