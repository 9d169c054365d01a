"""Full-size baselines the variants are compared against."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.models import (MobileNet_V2_Weights, ResNet101_Weights, VGG16_BN_Weights, mobilenet_v2, resnet101,
                                vgg16_bn)

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


# COACH's two models (COACH §IV-A): ResNet101 (DAG) and VGG16 (chain), for the end–cloud
# strategies. VGG16 is torchvision's batch-norm variant: the plain one does not train from scratch
# in the few epochs a CPU pool build affords.
@register_model(ModelSpec("resnet101", "baseline", "baseline", None, 224, 1.0, 1.0),
                weights=ResNet101_Weights.DEFAULT)
def resnet101_baseline(spec: ModelSpec, num_classes: int, state_dict: dict | None) -> ModelParts:
    """torchvision's ResNet101, its fc replaced by a ``num_classes`` head."""
    net = resnet101()
    if state_dict is not None:
        net.load_state_dict(state_dict)
    backbone = nn.Sequential(OrderedDict((name, getattr(net, name)) for name in
                                         ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")))
    return ModelParts(backbone, nn.AdaptiveAvgPool2d(1), nn.Sequential(nn.Flatten(), nn.Linear(2048, num_classes)))


@register_model(ModelSpec("vgg16", "baseline", "baseline", None, 224, 1.0, 1.0), weights=VGG16_BN_Weights.DEFAULT)
def vgg16_baseline(spec: ModelSpec, num_classes: int, state_dict: dict | None) -> ModelParts:
    """torchvision's VGG16 (batch norm), its last classifier layer replaced by a ``num_classes`` one."""
    net = vgg16_bn()
    if state_dict is not None:
        net.load_state_dict(state_dict)
    classifier = list(net.classifier)
    classifier[-1] = nn.Linear(classifier[-1].in_features, num_classes)
    return ModelParts(net.features, net.avgpool, nn.Sequential(nn.Flatten(), *classifier))
