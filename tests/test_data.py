"""vip_ray.data: shipped data sets, the seeded stratified split, torchvision loaders, batches."""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vip_ray.data import DataError, DataSplit, load_dataset

TUNE_DIR = Path(__file__).resolve().parents[1] / "tune"


def data_cfg(option: str, **overrides) -> dict:
    """The shipped tune/data/<option>.yaml as the plain dict that load_dataset receives."""
    cfg = yaml.safe_load((TUNE_DIR / "data" / f"{option}.yaml").read_text())
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def mnist() -> DataSplit:
    return load_dataset(data_cfg("mnist5k"))


@pytest.fixture(scope="module")
def digits() -> DataSplit:
    return load_dataset(data_cfg("digits"))


# --- shipped data sets ----------------------------------------------------------------------


def test_every_data_option_names_its_file_and_has_the_common_keys():
    for path in sorted((TUNE_DIR / "data").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        assert cfg["name"] == path.stem
        assert {"name", "root", "download", "test_fraction", "split_seed", "limit"} <= set(cfg), path.name


def test_mnist5k_shapes_dtypes_and_classes(mnist):
    assert (mnist.name, mnist.num_classes, mnist.channels) == ("mnist5k", 10, 1)
    assert mnist.class_names == [str(d) for d in range(10)]
    assert mnist.train_x.shape == (4000, 1, 28, 28) and mnist.test_x.shape == (1000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.uint8 and mnist.train_y.dtype == torch.int64
    assert int(mnist.train_x.max()) == 255
    assert np.bincount(mnist.train_y.numpy()).tolist() == [400] * 10
    assert np.bincount(mnist.test_y.numpy()).tolist() == [100] * 10
    assert mnist.image_size == (28, 28)


def test_digits_shapes_dtypes_and_scaling(digits):
    from sklearn.datasets import load_digits

    assert (digits.num_classes, digits.channels) == (10, 1)
    assert len(digits.train_y) + len(digits.test_y) == 1797
    assert digits.train_x.shape[1:] == (1, 8, 8) and digits.test_x.dtype == torch.uint8
    assert int(digits.train_x.max()) == 255  # 0..16 scaled to 0..255
    expected = np.rint(load_digits().images[digits.test_indices] * 255 / 16).astype(np.uint8)
    assert np.array_equal(digits.test_x.numpy()[:, 0], expected)  # test_indices trace back to the source


# --- split -----------------------------------------------------------------------------------


def test_same_config_gives_byte_identical_split():
    first, second = load_dataset(data_cfg("digits")), load_dataset(data_cfg("digits"))
    assert first.fingerprint() == second.fingerprint()
    assert torch.equal(first.train_x, second.train_x) and np.array_equal(first.test_indices, second.test_indices)
    assert load_dataset(data_cfg("digits", split_seed=1)).fingerprint() != first.fingerprint()


def test_split_is_stratified(digits):
    from sklearn.datasets import load_digits

    per_class = np.bincount(load_digits().target)
    test_counts = np.bincount(digits.test_y.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * per_class) <= 1)


def test_train_and_test_are_disjoint_and_cover_the_source(digits):
    from sklearn.datasets import load_digits

    source = load_digits()
    test_idx = digits.test_indices
    assert len(np.unique(test_idx)) == len(test_idx)
    train_idx = np.setdiff1d(np.arange(len(source.target)), test_idx)
    assert len(train_idx) == len(digits.train_y)
    expected_train = np.rint(source.images[train_idx] * 255 / 16).astype(np.uint8)
    assert np.array_equal(digits.train_x.numpy()[:, 0], expected_train)
    assert np.array_equal(digits.train_y.numpy(), source.target[train_idx])


def test_limit_is_a_stratified_seeded_subsample():
    small = load_dataset(data_cfg("mnist5k", limit=1000))
    assert len(small.train_y) + len(small.test_y) == 1000
    assert np.bincount(small.test_y.numpy()).tolist() == [20] * 10
    assert np.bincount(small.train_y.numpy()).tolist() == [80] * 10
    assert load_dataset(data_cfg("mnist5k", limit=1000)).fingerprint() == small.fingerprint()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"test_fraction": 1.5}, "data.test_fraction"),
        ({"limit": 0}, "data.limit"),
        ({"source": "mnist"}, "allowed: mnist5k, digits, cifar10, cifar100, imagefolder"),
        ({"tset_fraction": 0.1}, "unknown key(s) tset_fraction"),
        ({"split_seed": -1}, "data.split_seed"),
    ],
)
def test_bad_config_raises_a_clear_data_error(override, message):
    with pytest.raises(DataError) as error:
        load_dataset(data_cfg("digits", **override))
    assert message in str(error.value)


# --- CIFAR through torchvision's real loader ---------------------------------------------------

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_fake_cifar10(root: Path, per_batch: int = 10) -> dict[str, np.ndarray]:
    """A tiny cifar-10-batches-py in the real pickle format (rows of 3072 bytes, CHW order)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.permutation(per_batch) % 10
        entry = {"batch_label": batch, "labels": labels.tolist(), "data": data,
                 "filenames": [f"{batch}_{i}.png" for i in range(per_batch)]}
        (folder / batch).write_bytes(pickle.dumps(entry, protocol=2))
        batches[batch] = data
        batches[batch + "_labels"] = labels
    meta = {"num_cases_per_batch": per_batch, "label_names": CIFAR_NAMES, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    """torchvision hard-codes the md5 of the real CIFAR files; accept our fake ones instead."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def test_cifar10_real_loader_official_split(tmp_path, skip_cifar_md5):
    batches = write_fake_cifar10(tmp_path)
    split = load_dataset(data_cfg("cifar10", root=str(tmp_path)))
    assert (split.num_classes, split.channels, split.class_names) == (10, 3, CIFAR_NAMES)
    assert split.train_x.shape == (50, 3, 32, 32) and split.test_x.shape == (10, 3, 32, 32)
    assert split.train_x.dtype == torch.uint8 and split.test_y.dtype == torch.int64
    # the official test batch, in file order, pixels in CHW layout
    assert np.array_equal(split.test_x.numpy().reshape(10, 3072), batches["test_batch"])
    assert split.test_y.tolist() == batches["test_batch_labels"].tolist()
    assert split.test_indices.tolist() == list(range(50, 60))  # after the 5 train batches


def test_cifar10_seeded_split_of_all_files(tmp_path, skip_cifar_md5):
    write_fake_cifar10(tmp_path)
    cfg = data_cfg("cifar10", root=str(tmp_path), use_official_split=False)
    split = load_dataset(cfg)
    assert len(split.train_y) + len(split.test_y) == 60
    assert np.bincount(split.test_y.numpy()).tolist() == [1] * 10  # round(0.2 * 6) per class
    assert load_dataset(cfg).fingerprint() == split.fingerprint()


def test_cifar_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset(data_cfg("cifar10", root=str(tmp_path)))
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "cifar-10-python.tar.gz" in message and "data.download=true" in message
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset(data_cfg("cifar100", root=str(tmp_path)))


def test_cifar_corrupted_files_raise_data_error(tmp_path):
    write_fake_cifar10(tmp_path)  # real md5 check on: the fake files do not match
    with pytest.raises(DataError, match="corrupted"):
        load_dataset(data_cfg("cifar10", root=str(tmp_path)))


# --- ImageFolder -----------------------------------------------------------------------------

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def write_image_folder(root: Path, per_class: int = 3) -> None:
    from PIL import Image

    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (14, 10), colour).save(root / name / f"{i}.png")  # non-square on purpose


def test_imagefolder_loads_resized_images(tmp_path):
    write_image_folder(tmp_path)
    split = load_dataset(data_cfg("imagefolder", root=str(tmp_path), image_size=8, test_fraction=0.34))
    assert split.class_names == ["blue", "green", "red"] and split.channels == 3
    assert split.train_x.shape == (6, 3, 8, 8) and split.test_x.shape == (3, 3, 8, 8)
    assert split.test_y.tolist() == [0, 1, 2]
    for image, label in zip(split.train_x, split.train_y, strict=True):
        colour = COLOURS[split.class_names[int(label)]]
        assert image[:, 4, 4].tolist() == list(colour)
    grey = load_dataset(data_cfg("imagefolder", root=str(tmp_path), image_size=8, channels=1))
    assert grey.train_x.shape[1:] == (1, 8, 8)


def test_imagefolder_missing_or_empty_root_explains_the_layout(tmp_path):
    with pytest.raises(DataError) as error:
        load_dataset(data_cfg("imagefolder", root=str(tmp_path / "nothing")))
    assert str(tmp_path / "nothing") in str(error.value) and "one sub-folder per class" in str(error.value)
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_dataset(data_cfg("imagefolder", root=str(tmp_path)))  # exists, but no class folders


# --- batches ---------------------------------------------------------------------------------


def _as_rows(batches) -> Counter:
    rows = Counter()
    for x, y in batches:
        assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        pixels = (x * 255).round().to(torch.uint8)
        rows.update((p.numpy().tobytes(), int(label)) for p, label in zip(pixels, y, strict=True))
    return rows


def test_batches_cover_every_sample_once_per_epoch(digits):
    expected = Counter((p.numpy().tobytes(), int(y)) for p, y in zip(digits.train_x, digits.train_y, strict=True))
    epoch = list(digits.batches("train", 100, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in epoch] == [100] * 14 + [38]
    assert _as_rows(epoch) == expected
    assert _as_rows(digits.batches("test", 64, shuffle=False)).total() == len(digits.test_y)


def test_batches_are_reproducible_with_a_seeded_generator(digits):
    def labels(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return [v for _, y in digits.batches("train", 50, shuffle=True, generator=generator) for v in y.tolist()]

    assert labels(3) == labels(3)
    assert labels(3) != labels(4)


def test_batches_over_a_subset_of_indices(digits):
    subset = np.array([5, 0, 7, 3])
    (x, y), = list(digits.batches("train", 10, shuffle=False, indices=subset))
    assert torch.equal(y, digits.train_y[subset])
    assert torch.equal((x * 255).round().to(torch.uint8), digits.train_x[subset])
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        digits.batches("val", 10, shuffle=False)
    with pytest.raises(ValueError, match="indices must lie in"):
        digits.batches("test", 10, shuffle=False, indices=[10_000])
