"""One registry of model names, the ``VariantNet`` wrapper they all build into, and ``build_model``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models import WeightsEnum

from vip_ray.core.registry import Registry
from vip_ray.models.adapter import InputAdapter

FAMILIES = ("vp", "vp_imagenet", "resnet50_slices", "baseline")
KINDS = ("variant", "baseline", "teacher")
CUTS = ("relu", "bn", "conv")
PRETRAINED_MODES = ("auto", "never", "require")
IN_CHANNELS = (1, 3)


@dataclass(frozen=True)
class ModelSpec:
    """What a registered name stands for, before it is built."""

    name: str
    family: str
    kind: str
    segment: int | None       # size segment 1..7 within the family; None for teachers and baselines
    input_size: int           # nominal input side ρ
    width: float              # width factor (MobileNetV2 alpha)
    last_conv_factor: float   # VP: j, the last 1x1 conv has 64*j filters; 1.0 elsewhere (not VP eq. 1's d_i)


class ModelParts(NamedTuple):
    """What a family builder returns; ``build_model`` adds the input adapter and the metadata."""

    backbone: nn.Module   # image -> feature map
    pool: nn.Module       # feature map -> (B, D, 1, 1)
    head: nn.Module       # (B, D, 1, 1) -> (B, num_classes)


@dataclass(frozen=True)
class _Entry:
    spec: ModelSpec
    builder: Callable[..., ModelParts]
    weights: WeightsEnum | None   # ImageNet weights the builder can start from (receives state_dict=)
    sliced: bool                  # cut out of a teacher backbone (receives cut= and teacher=)


#: every model name, in table order (VP Table II, VIP's slices, baselines); filled by the family
#: modules' ``@register_model`` when :mod:`vip_ray.models` is imported
MODELS: Registry[_Entry] = Registry("model", ordered=True)


def register_model(*specs: ModelSpec, weights: WeightsEnum | None = None, sliced: bool = False):
    """Decorator: ``builder(spec, num_classes, ...) -> ModelParts`` builds every name in ``specs``."""

    def register(builder: Callable[..., ModelParts]) -> Callable[..., ModelParts]:
        for spec in specs:
            if spec.name in MODELS:
                raise ValueError(f"model {spec.name!r} is already registered")
            if spec.family not in FAMILIES or spec.kind not in KINDS:
                raise ValueError(f"{spec.name}: unknown family {spec.family!r} or kind {spec.kind!r}")
            MODELS.register(spec.name, _Entry(spec, builder, weights, sliced))
        return builder

    return register


def list_models(family: str | None = None) -> list[str]:
    """Registered names in table order, optionally only those of one family."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    return [name for name, entry in MODELS.items() if family in (None, entry.spec.family)]


def _entry(name: str) -> _Entry:
    return MODELS.get(name)  # an unknown name: UnknownName (a KeyError) listing the models


def model_spec(name: str) -> ModelSpec:
    return _entry(name).spec


class VariantNet(nn.Module):
    """adapter -> backbone -> pool -> head; every registered model is one of these."""

    def __init__(self, adapter: InputAdapter, backbone: nn.Module, pool: nn.Module, head: nn.Module,
                 meta: dict | None = None) -> None:
        super().__init__()
        self.adapter = adapter
        self.backbone = backbone
        self.pool = pool
        self.head = head
        self.meta = dict(meta or {})

    @property
    def input_size(self) -> int:
        return self.adapter.input_size

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone(self.adapter(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._pooled(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled (B, D) features, the head's input."""
        return torch.flatten(self._pooled(x), 1)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.head.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()


def cached_weights_path(weights: WeightsEnum) -> Path:
    """Where torch.hub keeps (and we look for) the file behind ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _load_pretrained(name: str, weights: WeightsEnum | None, mode: str) -> tuple[dict | None, str | None]:
    """(state_dict, file name) of the cached ImageNet weights, or (None, None). Never downloads."""
    if mode == "never":
        return None, None
    if weights is None:
        if mode == "require":
            raise ValueError(f"{name} has no pretrained ImageNet weights (students start from teacher=)")
        return None, None
    path = cached_weights_path(weights)
    if not path.is_file():
        if mode == "require":
            raise FileNotFoundError(f"{name}: pretrained='require' but {path} does not exist; "
                                    f"put the file from {weights.url} there")
        return None, None
    return torch.load(path, map_location="cpu", weights_only=True), path.name


def build_model(name: str, num_classes: int, *, in_channels: int = 3, input_size: int | None = None,
                input_scale: float = 1.0, crop_reduction: float = 0.0, crop_position: str = "center",
                cut: str = "relu", teacher: VariantNet | None = None, pretrained: str = "auto") -> VariantNet:
    """Build a registered model for ``num_classes`` classes.

    ρ is ``input_size`` if given, else ``max(8, round(nominal ρ * input_scale))``. ``in_channels``
    is the raw images' channel count (1 or 3); the adapter turns either into RGB. ``cut`` and
    ``teacher`` only apply to ResNet50 students; ``pretrained`` ("auto" | "never" | "require")
    only finds files already in the torch hub cache.
    """
    entry = _entry(name)
    spec = entry.spec
    if in_channels not in IN_CHANNELS:
        raise ValueError(f"in_channels must be one of {IN_CHANNELS}, got {in_channels}")
    if cut not in CUTS:
        raise ValueError(f"cut must be one of {CUTS}, got {cut!r}")
    if pretrained not in PRETRAINED_MODES:
        raise ValueError(f"pretrained must be one of {PRETRAINED_MODES}, got {pretrained!r}")
    if not entry.sliced and (cut != "relu" or teacher is not None):
        raise ValueError(f"cut= and teacher= only apply to ResNet50 students "
                         f"({', '.join(MODELS.where(lambda e: e.sliced))}), not {name}")
    rho = input_size if input_size is not None else max(8, round(spec.input_size * input_scale))
    if rho < 1:
        raise ValueError(f"input_size must be positive, got {rho}")

    state_dict, weights_file = _load_pretrained(name, entry.weights, pretrained)
    options = {}
    if entry.weights is not None:
        options["state_dict"] = state_dict
    if entry.sliced:
        options.update(cut=cut, teacher=teacher)
    parts = entry.builder(spec, num_classes, **options)

    meta = dict(
        name=name, family=spec.family, kind=spec.kind, segment=spec.segment, input_size=rho,
        nominal_input_size=spec.input_size, width=spec.width, last_conv_factor=spec.last_conv_factor,
        num_classes=num_classes, in_channels=in_channels, cut=cut if entry.sliced else None,
        crop_reduction=crop_reduction, crop_position=crop_position, pretrained=weights_file,
    )
    adapter = InputAdapter(rho, crop_reduction, crop_position)
    return VariantNet(adapter, parts.backbone, parts.pool, parts.head, meta)
