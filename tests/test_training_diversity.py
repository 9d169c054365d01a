"""VIP's class imbalance and crops reach a real training run (VIP §III-C).

One epoch of the trial body (``train_group``: what every Ray Tune trial runs) trains three tiny
VP V1 variants on 400 of sklearn's digits (320 training images of 8×8 px; two or three batches
a variant) with the ``crops_imbalance``
recipes: crop-25-center+imbalance-g0, crop-25-random+imbalance-g1, crop-50-center+imbalance-g2.
Nothing of the trainer is replaced. Two real objects are watched:

* the data set the trainer reads (a :class:`DataSplit` that also records each training batch it
  hands out: its images tensor and labels);
* every :class:`InputAdapter` (the models' input stage, where crops happen), through PyTorch's
  global forward hook: which module, train or eval mode, the input tensor and the output.

A model's training input is the very tensor the data set handed out (no filters, no shift here),
so each variant's training labels are known, and their histogram is held against the recipe
worked here with numpy: every sample of the target class, round-half-up 70 % of every other
class. The crops are held against slicing by hand: 25 % off 8 px leaves 6 (a 1-px border), 50 %
leaves 4 (a 2-px border); "random" picks one of the 3 × 3 offsets per image in training, and
every variant sees the centre at test time.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vip_ray.data import load_dataset
from vip_ray.data.datasets import DataSplit
from vip_ray.models.adapter import InputAdapter
from vip_ray.training.trainer import train_group
from vip_ray.tune.config import compose
from vip_ray.tune.plan import plan_pool

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)   # ImageNet statistics: the adapter's normalisation
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class RecordingSplit(DataSplit):
    """The real split; each training batch it yields is also kept (the tensor, so its identity
    can be matched with what a model receives, and its labels)."""

    def batches(self, split, batch_size, **kw):
        for x, y in super().batches(split, batch_size, **kw):
            if split == "train":
                self.handed_out[x.data_ptr()] = (x, y.numpy().copy())
            yield x, y


def _by_hand(x: torch.Tensor, top: int, left: int, side: int) -> torch.Tensor:
    """Crop a (B, 1, 8, 8) batch at (top, left) to side × side, grey → RGB, resize to 24 px, normalise."""
    x = x[..., top:top + side, left:left + side].expand(-1, 3, -1, -1)
    return (F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False) - MEAN) / STD


@pytest.fixture(scope="module")
def trained():
    cfg = compose(["data=digits", "shape=homogeneous", "shape.segment=1", "shape.n=3", "shape.baseline=false",
                   "diversity=crops_imbalance", "diversity.crops.reductions=[0.25,0.5]", "family.baselines=[]",
                   "data.limit=400"])
    plain = load_dataset(cfg["data"])
    data = RecordingSplit(**{k: getattr(plain, k) for k in DataSplit.__dataclass_fields__})
    data.handed_out = {}
    members = plan_pool(cfg, data.num_classes, data.channels).members
    seen: list[tuple[InputAdapter, bool, torch.Tensor, torch.Tensor]] = []

    def watch(module, args, output):
        if isinstance(module, InputAdapter):
            seen.append((module, module.training, args[0], output.detach()))

    hook = torch.nn.modules.module.register_module_forward_hook(watch)
    try:
        result = train_group({"members": members, "data": cfg["data"], "train": cfg["train"], "threads": 1,
                              "phases": [{"name": "a", "epochs": 1, "lr": 1e-3}]}, data=data)
    finally:
        hook.remove()
    return members, data, seen, result


SETTINGS = {  # member recipe → (crop reduction, position, imbalance target class)
    "crop-25-center+imbalance-g0": (0.25, "center", 0),
    "crop-25-random+imbalance-g1": (0.25, "random", 1),
    "crop-50-center+imbalance-g2": (0.5, "center", 2),
}


def test_each_variant_trains_on_its_own_imbalanced_class_histogram(trained):
    members, data, seen, result = trained
    assert sorted(m["recipe"]["name"] for m in members) == sorted(SETTINGS)
    full = np.bincount(data.train_y.numpy(), minlength=10)
    labels_of: dict[tuple, list[np.ndarray]] = {}
    for adapter, training, x, _ in seen:
        if training:
            assert x.data_ptr() in data.handed_out, "a model trained on a batch the data set did not hand out"
            labels_of.setdefault((adapter.crop_reduction, adapter.crop_position), []).append(
                data.handed_out[x.data_ptr()][1])
    assert len(labels_of) == 3
    for reduction, position, target in SETTINGS.values():
        got = np.bincount(np.concatenate(labels_of[(reduction, position)]), minlength=10)
        expected = np.where(np.arange(10) == target, full, np.floor(0.7 * full + 0.5)).astype(int)
        np.testing.assert_array_equal(got, expected)
        assert got[target] == full[target] and (got < full).sum() == 9   # the imbalance is there
    assert set(result["logits"]) == {m["id"] for m in members}   # the run finished: a bank row each


def test_crops_reach_the_models_inputs_in_training_and_the_centre_at_test(trained):
    _, _, seen, _ = trained
    offsets_seen: set[int] = set()
    checked = {"train": 0, "eval": 0}
    for adapter, training, x, out in seen:
        side = {0.25: 6, 0.5: 4}[adapter.crop_reduction]
        border = (8 - side) // 2
        centre = _by_hand(x, border, border, side)
        if not training or adapter.crop_position == "center":
            torch.testing.assert_close(out, centre)
            checked["train" if training else "eval"] += 1
            continue
        # random, training: each image is one of the 3 x 3 crops of its own input
        crops = torch.stack([_by_hand(x, t, le, side) for t in range(3) for le in range(3)])   # (9, B, 3, 24, 24)
        close = (crops - out).abs().flatten(2).amax(2) < 1e-5                                 # (9, B)
        assert close.any(0).all(), "an image the adapter gave is none of the 9 crops of its input"
        offsets_seen.update(int(k) for k in close.float().argmax(0))
        checked["train"] += 1
    assert checked["train"] >= 2 * 2 and checked["eval"] >= 3   # ≥ 2 training batches per centre variant; tests
    assert len(offsets_seen) >= 5      # random offsets, not one fixed crop (≈ 200 images over 9 offsets)
    # and the crop changes what the model sees: the 25 % centre crop differs from the whole image
    adapter, _, x, out = next(s for s in seen if s[0].crop_reduction == 0.25 and s[1])
    assert not torch.allclose(out, _by_hand(x, 0, 0, 8), atol=1e-3)
