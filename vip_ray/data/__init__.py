"""Data sets for variant pools: uint8 image tensors with a fixed, seeded, stratified test split.

    from vip_ray.data import load_dataset
    split = load_dataset({"name": "mnist5k", "source": "mnist5k"})   # or the Hydra `data` node
    for x, y in split.batches("train", 128, shuffle=True, generator=g): ...
"""

from vip_ray.data.datasets import (
    SOURCES,
    DataError,
    DataSplit,
    load_dataset,
    stratified_split,
    stratified_subsample,
)

__all__ = [
    "SOURCES",
    "DataError",
    "DataSplit",
    "load_dataset",
    "stratified_split",
    "stratified_subsample",
]
