"""Full-size baselines the variants are compared against."""

from __future__ import annotations

from torch import nn
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from vip_ray.models.registry import ModelParts, ModelSpec, register_model


@register_model(ModelSpec("mobilenet_v2", "baseline", "baseline", None, 224, 1.0, 1.0),
                weights=MobileNet_V2_Weights.DEFAULT)
def mobilenet_v2_baseline(spec: ModelSpec, num_classes: int, state_dict: dict | None) -> ModelParts:
    """torchvision's MobileNetV2 (width 1.0) with a new ``num_classes`` head."""
    net = mobilenet_v2()
    if state_dict is not None:
        net.load_state_dict(state_dict)
    head = nn.Sequential(nn.Flatten(), nn.Dropout(p=0.2), nn.Linear(net.last_channel, num_classes))  # torchvision's
    nn.init.normal_(head[-1].weight, 0.0, 0.01)
    nn.init.zeros_(head[-1].bias)
    return ModelParts(backbone=net.features, pool=nn.AdaptiveAvgPool2d(1), head=head)
