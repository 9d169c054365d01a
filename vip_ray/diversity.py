"""Diversity-inducing training recipes of VIP (paper 000, section III-C and Table II).

Variants of the same size become diverse by seeing different data:

* filters   -- each variant trains with its own subset of random geometric / photometric filters;
* crops     -- each variant sees inputs shrunk by 6, 12, 15 or 20 % per side, cut at the center
               or at a random offset in training (test time: always the center); the crop
               itself is applied by the model's input adapter (vip_ray.models.adapter);
* imbalance -- variant g keeps 100 % of its target class group (10 % of the classes) and 70 %
               of every other class.

A `diversity` config (tune/diversity/<option>.yaml) lists `strategies`; each strategy expands
into a list of per-variant settings, and combinations zip them cyclically (see build_recipes).
A Recipe is the plain-data result that a trial receives and the pool manifest records.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

FILTERS = ("flip_left_right", "rotate_90", "contrast", "hue", "saturation", "brightness")
GEOMETRIC_FILTERS = ("flip_left_right", "rotate_90")
PHOTOMETRIC_FILTERS = ("contrast", "hue", "saturation", "brightness")
STRATEGIES = ("filters", "crops", "imbalance")
CROP_POSITIONS = ("center", "random")

FACTOR_RANGE = (0.6, 1.4)  # contrast / brightness / saturation factor, uniform per sample
HUE_SHIFT_RANGE = (-0.1, 0.1)  # fraction of the hue circle, uniform per sample
FLIP_PROBABILITY = 0.5


# ---------------------------------------------------------------------------------------------
# Recipe
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How one variant's training data differ from the plain data set."""

    name: str
    filters: tuple[str, ...] = ()
    crop_reduction: float = 0.0
    crop_position: str = "center"
    imbalance_group: int | None = None
    imbalance_groups: int = 10
    imbalance_other_fraction: float = 0.7

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        where = f"recipe {self.name!r}"
        _check_filter_names(self.filters, key=f"{where}: filters")
        if not 0.0 <= self.crop_reduction < 1.0:
            raise ValueError(f"{where}: crop_reduction must be in [0, 1), got {self.crop_reduction!r}")
        if self.crop_position not in CROP_POSITIONS:
            raise ValueError(
                f"{where}: crop_position {self.crop_position!r} is not one of {', '.join(CROP_POSITIONS)}"
            )
        if self.imbalance_groups < 1:
            raise ValueError(f"{where}: imbalance_groups must be >= 1, got {self.imbalance_groups!r}")
        if self.imbalance_group is not None and not 0 <= self.imbalance_group < self.imbalance_groups:
            raise ValueError(
                f"{where}: imbalance_group must be in 0..{self.imbalance_groups - 1}, got {self.imbalance_group!r}"
            )
        if not 0.0 <= self.imbalance_other_fraction <= 1.0:
            raise ValueError(
                f"{where}: imbalance_other_fraction must be in [0, 1], got {self.imbalance_other_fraction!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready dict (filters as a list)."""
        data = dataclasses.asdict(self)
        data["filters"] = list(self.filters)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"recipe: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}")
        return cls(**dict(data))


# ---------------------------------------------------------------------------------------------
# Recipes from the `diversity` config
# ---------------------------------------------------------------------------------------------


def build_recipes(diversity_cfg: Mapping[str, Any]) -> list[Recipe]:
    """One Recipe per variant.

    No strategy -> [Recipe("none")]. One strategy -> its options in order (filters: one per
    subset; crops: reductions x positions, reduction-major; imbalance: groups 0..G-1).
    Several strategies -> max(len) recipes; recipe i combines option i % len of each strategy,
    named by joining the parts with "+" (e.g. "crop-06-center+imbalance-g0").
    """
    cfg = _plain_dict(diversity_cfg)
    strategies = cfg.get("strategies") or []
    if isinstance(strategies, str) or not isinstance(strategies, Sequence):
        raise ValueError(
            f"diversity.strategies must be a list drawn from {', '.join(STRATEGIES)}, got {strategies!r}"
        )
    for position, strategy in enumerate(strategies):
        if strategy not in STRATEGIES:
            raise ValueError(
                f"diversity.strategies[{position}]: unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}"
            )
    if len(set(strategies)) != len(strategies):
        raise ValueError(f"diversity.strategies lists a strategy twice: {list(strategies)}")
    if not strategies:
        return [Recipe("none")]
    options = [_STRATEGY_OPTIONS[strategy](cfg.get(strategy), f"diversity.{strategy}") for strategy in strategies]
    count = max(len(choices) for choices in options)
    recipes = [_combine([choices[i % len(choices)] for choices in options]) for i in range(count)]
    names = [recipe.name for recipe in recipes]
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"diversity: recipe names repeat ({', '.join(repeated)}): a strategy lists a value twice")
    return recipes


def _combine(parts: list[dict[str, Any]]) -> Recipe:
    fields: dict[str, Any] = {}
    for part in parts:
        fields.update(part)
    fields["name"] = "+".join(part["name"] for part in parts)
    return Recipe(**fields)


def _filters_options(section: Any, key: str) -> list[dict[str, Any]]:
    subsets = _section(section, key, "subsets")
    if not isinstance(subsets, Sequence) or isinstance(subsets, str) or not subsets:
        raise ValueError(
            f"{key}.subsets must be a non-empty list of filter lists, e.g. [[flip_left_right, contrast]]"
        )
    options, seen = [], set()
    for i, subset in enumerate(subsets):
        if isinstance(subset, str) or not isinstance(subset, Sequence) or not subset:
            raise ValueError(f"{key}.subsets[{i}] must be a non-empty list of filters from {', '.join(FILTERS)}")
        _check_filter_names(subset, key=f"{key}.subsets[{i}]")
        if frozenset(subset) in seen:
            raise ValueError(f"{key}.subsets[{i}] repeats an earlier subset: {list(subset)}")
        seen.add(frozenset(subset))
        options.append({"name": f"filters-{i}", "filters": tuple(subset)})
    return options


def _crops_options(section: Any, key: str) -> list[dict[str, Any]]:
    reductions = _section(section, key, "reductions")
    positions = _section(section, key, "positions")
    for i, reduction in enumerate(_non_empty_list(reductions, f"{key}.reductions")):
        if isinstance(reduction, bool) or not isinstance(reduction, (int, float)) or not 0 < reduction < 1:
            raise ValueError(f"{key}.reductions[{i}] must be a fraction in (0, 1), e.g. 0.06, got {reduction!r}")
    for i, position in enumerate(_non_empty_list(positions, f"{key}.positions")):
        if position not in CROP_POSITIONS:
            raise ValueError(
                f"{key}.positions[{i}]: unknown position {position!r}; allowed: {', '.join(CROP_POSITIONS)}"
            )
    return [
        {"name": f"crop-{_percent(r)}-{p}", "crop_reduction": float(r), "crop_position": p}
        for r, p in itertools.product(reductions, positions)
    ]


def _imbalance_options(section: Any, key: str) -> list[dict[str, Any]]:
    groups = _section(section, key, "groups")
    other_fraction = _section(section, key, "other_fraction")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{key}.groups must be a positive integer (VIP: 10), got {groups!r}")
    is_number = isinstance(other_fraction, (int, float)) and not isinstance(other_fraction, bool)
    if not is_number or not 0 <= other_fraction <= 1:
        raise ValueError(f"{key}.other_fraction must be a fraction in [0, 1] (VIP: 0.7), got {other_fraction!r}")
    return [
        {
            "name": f"imbalance-g{group}",
            "imbalance_group": group,
            "imbalance_groups": groups,
            "imbalance_other_fraction": float(other_fraction),
        }
        for group in range(groups)
    ]


_STRATEGY_OPTIONS: dict[str, Callable[[Any, str], list[dict[str, Any]]]] = {
    "filters": _filters_options,
    "crops": _crops_options,
    "imbalance": _imbalance_options,
}


def _section(section: Any, key: str, field: str) -> Any:
    if not isinstance(section, Mapping):
        strategy = key.rsplit(".", 1)[-1]
        raise ValueError(
            f"{key} is missing but diversity.strategies lists {strategy!r}: define it (see "
            f"tune/diversity/{strategy}.yaml) or add `- {strategy}@_here_` to the option's defaults list"
        )
    if field not in section:
        raise ValueError(f"{key}.{field} is missing (see tune/diversity/{key.rsplit('.', 1)[-1]}.yaml)")
    return section[field]


def _non_empty_list(value: Any, key: str) -> Sequence[Any]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{key} must be a non-empty list, got {value!r}")
    return value


def _percent(fraction: float) -> str:
    percent = round(fraction * 100, 6)
    return f"{int(percent):02d}" if percent == int(percent) else f"{percent:g}"


def _plain_dict(cfg: Mapping[str, Any]) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    if not isinstance(cfg, Mapping):
        raise ValueError(f"the diversity config must be a mapping (the `diversity` node), got {type(cfg).__name__}")
    return dict(cfg)


def _check_filter_names(filters: Sequence[str], key: str) -> None:
    for name in filters:
        if name not in FILTERS:
            raise ValueError(f"{key}: unknown filter {name!r}; allowed: {', '.join(FILTERS)}")


# ---------------------------------------------------------------------------------------------
# Class imbalance
# ---------------------------------------------------------------------------------------------


def imbalance_target_classes(group: int, num_classes: int, groups: int = 10) -> list[int]:
    """The target classes of `group`: a contiguous block of about num_classes / groups classes.

    The blocks partition 0..num_classes-1 like numpy.array_split: the first num_classes % groups
    groups get one class more (C=10: group g -> [g]; C=100: [10g .. 10g+9]; C=7: groups 0..6 get
    one class each, groups 7..9 none, so those variants see a uniform 70 % subsample).
    """
    if num_classes < 1 or groups < 1:
        raise ValueError(f"num_classes and groups must be >= 1, got {num_classes} and {groups}")
    if not 0 <= group < groups:
        raise ValueError(f"imbalance group must be in 0..{groups - 1}, got {group}")
    base, extra = divmod(num_classes, groups)
    start = group * base + min(group, extra)
    return list(range(start, start + base + (1 if group < extra else 0)))


def imbalance_indices(labels: np.ndarray, recipe: Recipe, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of the training samples this recipe keeps: every sample of the target
    classes and round(other_fraction * n_c) seeded-random samples of every other class c.
    A recipe without imbalance keeps everything."""
    labels = np.asarray(labels)
    if recipe.imbalance_group is None:
        return np.arange(len(labels), dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    targets = set(imbalance_target_classes(recipe.imbalance_group, num_classes, recipe.imbalance_groups))
    rng = np.random.default_rng(seed)
    kept = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        if label not in targets:
            keep = int(np.floor(recipe.imbalance_other_fraction * len(members) + 0.5))
            members = rng.permutation(members)[:keep]
        kept.append(members)
    return np.sort(np.concatenate(kept)).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Filters (random per-sample augmentation at training time)
# ---------------------------------------------------------------------------------------------


def apply_filters(x: torch.Tensor, filters: Sequence[str], generator: torch.Generator | None) -> torch.Tensor:
    """Randomly augment each sample of a float (B, C, H, W) batch in [0, 1] with `filters`.

    Filters run in the canonical FILTERS order (geometric first), whatever order is given, so a
    recipe is a set. All random draws come from `generator`: the same seed gives the same batch.
    flip_left_right: p = 0.5; rotate_90: k quarter turns, k uniform in {0, 1, 2, 3} (only {0, 2}
    for non-square images, which keeps the shape); contrast / brightness / saturation: factor
    uniform in [0.6, 1.4]; hue: shift uniform in [-0.1, 0.1]. Saturation and hue leave
    1-channel images unchanged (as torchvision does).
    """
    _check_filter_names(filters, key="apply_filters")
    _check_images(x)
    chosen = set(filters)
    for name in FILTERS:
        if name in chosen:
            x = _FILTER_FUNCTIONS[name](x, generator)
    return x


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError("expected a float image batch (B, C, H, W) with values in [0, 1]")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")


def _uniform(x: torch.Tensor, generator: torch.Generator | None, low: float, high: float) -> torch.Tensor:
    """One value per sample, shaped (B, 1, 1, 1) to broadcast over the image."""
    device = generator.device if generator is not None else torch.device("cpu")
    values = torch.rand(x.shape[0], generator=generator, device=device) * (high - low) + low
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # torchvision's adjust_* formula, with a per-sample factor
    return (x * factor + other * (1.0 - factor)).clamp_(0.0, 1.0)


def _flip_left_right(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    flip = _uniform(x, generator, 0.0, 1.0) < FLIP_PROBABILITY
    return torch.where(flip, F.horizontal_flip(x), x)


def _rotate_90(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else torch.device("cpu")
    if x.shape[-2] == x.shape[-1]:
        turns = torch.randint(0, 4, (x.shape[0],), generator=generator, device=device)
    else:  # half turns only: a quarter turn would change the shape of the batch
        turns = 2 * torch.randint(0, 2, (x.shape[0],), generator=generator, device=device)
    turns = turns.to(x.device)
    rotated = x.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        if bool(chosen.any()):
            rotated[chosen] = torch.rot90(x[chosen], k, dims=(-2, -1))
    return rotated


def _contrast(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    factor = _uniform(x, generator, *FACTOR_RANGE)
    grey = F.rgb_to_grayscale(x) if x.shape[1] == 3 else x
    return _blend(x, grey.mean(dim=(-3, -2, -1), keepdim=True), factor)


def _brightness(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    factor = _uniform(x, generator, *FACTOR_RANGE)
    return (x * factor).clamp_(0.0, 1.0)


def _saturation(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    factor = _uniform(x, generator, *FACTOR_RANGE)
    return _blend(x, F.rgb_to_grayscale(x), factor)


def _hue(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    shift = _uniform(x, generator, *HUE_SHIFT_RANGE).view(-1, 1, 1)
    hue, saturation, value = _rgb_to_hsv(x)
    return _hsv_to_rgb(torch.remainder(hue + shift, 1.0), saturation, value)


_FILTER_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]] = {
    "flip_left_right": _flip_left_right,
    "rotate_90": _rotate_90,
    "contrast": _contrast,
    "hue": _hue,
    "saturation": _saturation,
    "brightness": _brightness,
}


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # same conversion as torchvision's adjust_hue, batched so that each sample can get its own shift
    red, green, blue = x.unbind(dim=-3)
    value, minimum = torch.aminmax(x, dim=-3)
    spread = value - minimum
    grey = spread == 0
    ones = torch.ones_like(spread)
    saturation = spread / torch.where(value == 0, ones, value)
    spread = torch.where(grey, ones, spread)
    hue = torch.where(
        value == red,
        (green - blue) / spread,
        torch.where(value == green, 2.0 + (blue - red) / spread, 4.0 + (red - green) / spread),
    )
    hue = torch.where(grey, torch.zeros_like(hue), torch.remainder(hue / 6.0, 1.0))
    return hue, saturation, value


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    sector_float = torch.floor(hue * 6.0)
    fraction = hue * 6.0 - sector_float
    sector = sector_float.long().remainder_(6).unsqueeze(0)
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    # (red, green, blue) for hue sectors 0..5
    red = torch.stack((value, q, p, p, t, value)).gather(0, sector).squeeze(0)
    green = torch.stack((t, value, value, q, p, p)).gather(0, sector).squeeze(0)
    blue = torch.stack((p, p, t, value, value, q)).gather(0, sector).squeeze(0)
    return torch.stack((red, green, blue), dim=-3).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------


def variant_seed(global_seed: int, variant_index: int) -> int:
    """Per-variant seed from the fixed global seed (NumPy SeedSequence mixing: the same on every
    process and machine, unlike hash()); a 32-bit value every RNG accepts."""
    for key, value in (("global_seed", global_seed), ("variant_index", variant_index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return int(np.random.SeedSequence([int(global_seed), int(variant_index)]).generate_state(1)[0])
