"""vip_ray.diversity: recipes from the Hydra `diversity` options, imbalance, filters, seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf
from torchvision.transforms.v2 import functional as F

from vip_ray.data import load_dataset
from vip_ray.diversity import (
    FILTERS,
    GEOMETRIC_FILTERS,
    PHOTOMETRIC_FILTERS,
    Recipe,
    apply_filters,
    build_recipes,
    imbalance_indices,
    imbalance_target_classes,
    variant_seed,
)

TUNE_DIR = Path(__file__).resolve().parents[1] / "tune"
EXPECTED_COUNTS = {
    "none": 1, "filters": 5, "crops": 8, "imbalance": 10,
    "filters_crops": 8, "crops_imbalance": 10, "all": 10,
}


def diversity_node(option: str) -> dict:
    """The `diversity` node of the root config composed by Hydra with diversity=<option>."""
    with initialize_config_dir(config_dir=str(TUNE_DIR), version_base=None):
        cfg = compose("config", overrides=[f"diversity={option}"])
    return OmegaConf.to_container(cfg.diversity, resolve=True)


# --- recipes from the config options ---------------------------------------------------------


def test_every_option_file_is_covered_and_named_after_its_stem():
    stems = {path.stem for path in (TUNE_DIR / "diversity").glob("*.yaml")}
    assert stems == set(EXPECTED_COUNTS)


@pytest.mark.parametrize("option", list(EXPECTED_COUNTS))
def test_each_option_composes_into_its_recipes(option):
    node = diversity_node(option)
    assert node["name"] == option
    recipes = build_recipes(node)
    assert len(recipes) == EXPECTED_COUNTS[option]
    assert len({r.name for r in recipes}) == len(recipes)
    assert all(Recipe.from_dict(r.to_dict()) == r for r in recipes)


def test_single_strategy_recipes():
    assert build_recipes(diversity_node("none")) == [Recipe("none")]
    crops = build_recipes(diversity_node("crops"))
    assert [(r.crop_reduction, r.crop_position) for r in crops] == [
        (c, p) for c in (0.06, 0.12, 0.15, 0.20) for p in ("center", "random")
    ]
    assert crops[2].name == "crop-12-center" and crops[7].name == "crop-20-random"
    imbalance = build_recipes(diversity_node("imbalance"))
    assert [r.imbalance_group for r in imbalance] == list(range(10))
    assert {(r.imbalance_groups, r.imbalance_other_fraction) for r in imbalance} == {(10, 0.7)}
    assert imbalance[3].name == "imbalance-g3"


def test_filter_subsets_are_distinct_cover_all_filters_and_mix_both_kinds():
    subsets = [r.filters for r in build_recipes(diversity_node("filters"))]
    assert len({frozenset(s) for s in subsets}) == 5
    assert set().union(*subsets) == set(FILTERS)
    for subset in subsets:
        assert set(subset) & set(GEOMETRIC_FILTERS) and set(subset) & set(PHOTOMETRIC_FILTERS)


@pytest.mark.parametrize(
    ("option", "strategies"),
    [("filters_crops", ["filters", "crops"]), ("crops_imbalance", ["crops", "imbalance"]),
     ("all", ["filters", "crops", "imbalance"])],
)
def test_combinations_zip_the_single_strategies_cyclically(option, strategies):
    singles = {s: build_recipes(diversity_node(s)) for s in strategies}
    combined = build_recipes(diversity_node(option))
    assert len(combined) == max(len(v) for v in singles.values())
    for i, recipe in enumerate(combined):
        parts = [singles[s][i % len(singles[s])] for s in strategies]
        assert recipe.name == "+".join(p.name for p in parts)
        for part in parts:  # every part's own settings survive the combination
            for key, value in part.to_dict().items():
                if key != "name" and value != Recipe("x").to_dict()[key]:
                    assert recipe.to_dict()[key] == value
    if option == "crops_imbalance":
        assert combined[0].name == "crop-06-center+imbalance-g0"
        assert combined[9].name == "crop-06-random+imbalance-g9"


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(MissingConfigException) as error:
        diversity_node("nope")
    message = str(error.value)
    assert "Could not find 'diversity/nope'" in message
    listed = message.split("Available options in 'diversity':")[1].split("Config search path")[0].split()
    assert sorted(listed) == sorted(EXPECTED_COUNTS)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"strategies": ["filter"]},
         "diversity.strategies[0]: unknown strategy 'filter'; allowed: filters, crops, imbalance"),
        ({"strategies": ["filters"], "filters": {"subsets": [["flip_left_right", "blur"]]}},
         "diversity.filters.subsets[0]: unknown filter 'blur'; allowed: " + ", ".join(FILTERS)),
        ({"strategies": ["crops"], "crops": {"reductions": [0.1], "positions": ["corner"]}},
         "allowed: center, random"),
        ({"strategies": ["imbalance"]}, "diversity.imbalance is missing"),
        ({"strategies": ["crops"], "crops": {"reductions": [0.1, 0.1], "positions": ["center"]}},
         "recipe names repeat (crop-10-center)"),
    ],
)
def test_bad_diversity_config_names_the_key_and_allowed_values(cfg, message):
    with pytest.raises(ValueError) as error:
        build_recipes(cfg)
    assert message in str(error.value)


def test_recipe_rejects_bad_fields():
    with pytest.raises(ValueError, match="unknown filter 'blur'"):
        Recipe("x", filters=("blur",))
    with pytest.raises(ValueError, match="unknown key"):
        Recipe.from_dict({"name": "x", "colour": 1})


# --- class imbalance -------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [10, 100, 7, 3, 23])
def test_target_classes_of_all_groups_partition_the_classes(num_classes):
    groups = [imbalance_target_classes(g, num_classes) for g in range(10)]
    assert sorted(c for group in groups for c in group) == list(range(num_classes))
    sizes = [len(group) for group in groups]
    assert max(sizes) - min(sizes) <= 1
    if num_classes == 10:
        assert groups == [[g] for g in range(10)]
    if num_classes == 100:
        assert groups[3] == list(range(30, 40))


def test_imbalance_keeps_all_targets_and_70_percent_of_the_rest_on_mnist5k():
    labels = load_dataset(yaml.safe_load((TUNE_DIR / "data" / "mnist5k.yaml").read_text())).train_y.numpy()
    totals = np.bincount(labels, minlength=10)
    for index, recipe in enumerate(build_recipes(diversity_node("imbalance"))):
        kept = imbalance_indices(labels, recipe, num_classes=10, seed=variant_seed(0, index))
        assert np.all(np.diff(kept) > 0)  # sorted, no duplicates
        fractions = np.bincount(labels[kept], minlength=10) / totals
        for label, fraction in enumerate(fractions):
            expected = 1.0 if label == recipe.imbalance_group else 0.7
            assert abs(fraction - expected) <= 0.01, (recipe.name, label, fraction)
    one = build_recipes(diversity_node("imbalance"))[0]
    assert np.array_equal(imbalance_indices(labels, one, 10, seed=5), imbalance_indices(labels, one, 10, seed=5))
    assert not np.array_equal(imbalance_indices(labels, one, 10, seed=5), imbalance_indices(labels, one, 10, seed=6))
    assert len(imbalance_indices(labels, Recipe("none"), 10, seed=0)) == len(labels)


# --- filters ---------------------------------------------------------------------------------


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(channels: int = 3, height: int = 12, width: int = 12, batch: int = 16) -> torch.Tensor:
    return torch.rand(batch, channels, height, width, generator=seeded(123))


@pytest.mark.parametrize("shape", [(3, 12, 12), (1, 12, 12), (3, 10, 14)])
def test_apply_filters_is_reproducible_in_range_and_keeps_shape(shape):
    x = images(*shape)
    first = apply_filters(x, FILTERS, seeded(0))
    assert torch.equal(first, apply_filters(x, FILTERS, seeded(0)))
    assert not torch.equal(first, apply_filters(x, FILTERS, seeded(1)))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0


def test_flip_left_right_mirrors_about_half_of_the_samples():
    ramp = torch.linspace(0, 1, 12).expand(64, 3, 12, 12).contiguous()  # left-right asymmetric
    out = apply_filters(ramp, ["flip_left_right"], seeded(0))
    flipped = torch.tensor([torch.equal(o, r.flip(-1)) for o, r in zip(out, ramp, strict=True)])
    unchanged = torch.tensor([torch.equal(o, r) for o, r in zip(out, ramp, strict=True)])
    assert bool((flipped | unchanged).all()) and 16 <= int(flipped.sum()) <= 48


@pytest.mark.parametrize(("height", "width", "allowed_turns"), [(12, 12, {0, 1, 2, 3}), (10, 14, {0, 2})])
def test_rotate_90_turns_each_sample_by_quarter_turns(height, width, allowed_turns):
    x = images(1, height, width, batch=64)  # random pixels: every rotation is distinguishable
    out = apply_filters(x, ["rotate_90"], seeded(0))
    turns = set()
    for o, original in zip(out, x, strict=True):
        (k,) = [k for k in range(4) if torch.rot90(original, k, dims=(-2, -1)).shape == o.shape
                and torch.equal(torch.rot90(original, k, dims=(-2, -1)), o)]
        turns.add(k)
    assert turns == allowed_turns


PHOTOMETRIC = {  # filter -> (torchvision reference, low, high of its per-sample parameter)
    "contrast": (F.adjust_contrast, 0.6, 1.4),
    "saturation": (F.adjust_saturation, 0.6, 1.4),
    "brightness": (F.adjust_brightness, 0.6, 1.4),
    "hue": (F.adjust_hue, -0.1, 0.1),
}


@pytest.mark.parametrize("name", list(PHOTOMETRIC))
def test_photometric_filter_matches_torchvision_per_sample(name):
    reference, low, high = PHOTOMETRIC[name]
    x = images(3)
    out = apply_filters(x, [name], seeded(7))
    assert not torch.allclose(out, x)
    parameters = torch.rand(len(x), generator=seeded(7)) * (high - low) + low  # the filter's only draw
    expected = torch.stack([reference(img, float(p)) for img, p in zip(x, parameters, strict=True)])
    assert torch.allclose(out, expected, atol=1e-5)


def test_colour_filters_leave_grey_images_alone_and_the_others_do_not():
    grey = images(1)
    for name in ("saturation", "hue"):
        assert torch.equal(apply_filters(grey, [name], seeded(0)), grey)
    for name in ("contrast", "brightness"):
        assert not torch.allclose(apply_filters(grey, [name], seeded(0)), grey)


def test_apply_filters_rejects_unknown_filters():
    with pytest.raises(ValueError, match="unknown filter 'blur'; allowed: flip_left_right"):
        apply_filters(images(), ["blur"], seeded(0))


# --- seeds -----------------------------------------------------------------------------------


def test_variant_seed_is_stable_and_distinct():
    assert variant_seed(0, 0) == 2968811710  # fixed value: the same in every process and release
    assert variant_seed(42, 3) == 2541583436
    seeds = {variant_seed(g, i) for g in range(3) for i in range(500)}
    assert len(seeds) == 1500
    with pytest.raises(ValueError, match="global_seed"):
        variant_seed(-1, 0)
