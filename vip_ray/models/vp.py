"""VP's MobileNetV2 variants (VP paper, Table I and Table II).

Each variant is MobileNetV2 at a reduced width factor whose last 1x1 conv has 64*j filters,
j growing with the input size ρ, followed by a global max pool and a 1x1-conv classifier.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops import Conv2dNormActivation

from vip_ray.models.registry import ModelParts, ModelSpec, register_model

STEM_CHANNELS = 32
# VP Table I / MobileNetV2: expansion t, output channels c, repeats n, stride of the first repeat s.
BOTTLENECKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
INPUT_SIZES = (96, 128, 160, 192, 224, 256, 320)  # ρ_i of V_i, i = 1..7
# family, name prefix, width factor, j(i): the last conv has 64*j filters.
VARIANT_FAMILIES = (
    ("vp", "vp_v", 0.35, lambda i: 3 + i),
    ("vp_imagenet", "vp_vim", 0.5, lambda i: min(7 + 2 * i, 20)),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNetV2's channel rounding (torchvision / Keras): nearest multiple, never 10 % below."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def vp_backbone(width: float, last_channels: int) -> nn.Sequential:
    """Stem conv, the 17 inverted residuals of ``BOTTLENECKS`` at ``width``, then 1x1 conv to ``last_channels``."""
    channels = make_divisible(STEM_CHANNELS * width)
    layers: list[nn.Module] = [Conv2dNormActivation(3, channels, stride=2, activation_layer=nn.ReLU6)]
    for expansion, out, repeats, stride in BOTTLENECKS:
        out_channels = make_divisible(out * width)
        for repeat in range(repeats):
            layers.append(InvertedResidual(channels, out_channels, stride if repeat == 0 else 1, expansion))
            channels = out_channels
    layers.append(Conv2dNormActivation(channels, last_channels, kernel_size=1, activation_layer=nn.ReLU6))
    backbone = nn.Sequential(*layers)
    # torchvision's MobileNetV2 initialisation; PyTorch's default trains this depth much worse.
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return backbone


def _vp_specs() -> list[ModelSpec]:
    return [
        ModelSpec(f"{prefix}{i}", family, "variant", i, rho, width, float(depth(i)))
        for family, prefix, width, depth in VARIANT_FAMILIES
        for i, rho in enumerate(INPUT_SIZES, start=1)
    ]


@register_model(*_vp_specs())
def vp_variant(spec: ModelSpec, num_classes: int) -> ModelParts:
    last_channels = 64 * int(spec.last_conv_factor)
    classifier = nn.Conv2d(last_channels, num_classes, kernel_size=1)  # VP replaces the FC layer by a 1x1 conv
    nn.init.normal_(classifier.weight, 0.0, 0.01)
    nn.init.zeros_(classifier.bias)
    return ModelParts(
        backbone=vp_backbone(spec.width, last_channels),
        pool=nn.AdaptiveMaxPool2d(1),  # VP replaces average pooling by max pooling
        head=nn.Sequential(classifier, nn.Flatten()),
    )
