"""Where a model can be cut for model parallelism, and what each cut costs.

A model is a chain of *blocks*: the input adapter, each top-level child of the backbone, then
pool + head. Cutting after block ``b`` sends block ``b``'s real output tensor to the next device.
MACs are counted as in :func:`vip_ray.models.profile.count_macs` (Conv2d and Linear layers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from vip_ray.models.registry import VariantNet

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


@dataclass(frozen=True)
class Block:
    name: str
    macs: int
    out_shape: tuple[int, ...]   # one sample's output, without the batch dimension

    @property
    def out_numel(self) -> int:
        n = 1
        for s in self.out_shape:
            n *= s
        return n

    def out_bytes(self, dtype: str = "float32") -> int:
        return self.out_numel * DTYPE_BYTES[dtype]


def block_modules(model: VariantNet) -> list[tuple[str, nn.Module]]:
    """The model's blocks as ``(name, module)`` in forward order: run one after the other they
    compute the model (the live chain runs a slice of them per device)."""
    parts: list[tuple[str, nn.Module]] = [("adapter", model.adapter)]
    parts += [(f"backbone.{n}", m) for n, m in model.backbone.named_children()] or [("backbone", model.backbone)]
    parts.append(("head", nn.Sequential(model.pool, model.head, nn.Flatten(1))))
    return parts


def slice_module(model: VariantNet, start: int, end: int) -> nn.Module:
    """Blocks ``start..end-1`` of ``model`` as one module (shares the model's weights)."""
    return nn.Sequential(*(m for _, m in block_modules(model)[start:end]))


@torch.no_grad()
def block_profile(model: VariantNet, in_channels: int = 1, image_size: int = 28) -> list[Block]:
    """The model's blocks on one ``in_channels × image_size²`` raw image, in forward order."""
    macs: dict[int, int] = {}
    owner: dict[nn.Module, int] = {}
    parts = block_modules(model)
    for b, (_, part) in enumerate(parts):
        for m in part.modules():
            owner.setdefault(m, b)

    def count(mod, inputs, output):
        b = owner[mod]
        if isinstance(mod, nn.Conv2d):
            add = output.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            add = output.numel() * mod.in_features
        macs[b] = macs.get(b, 0) + add

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, in_channels, image_size, image_size)
        blocks = []
        for b, (name, part) in enumerate(parts):
            x = part(x)
            blocks.append(Block(name, macs.get(b, 0), tuple(x.shape[1:])))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return blocks


def balanced_cuts(block_macs: Sequence[float], speeds: Sequence[float], *,
                  cut_bytes: Sequence[float] | None = None, s_per_byte: Sequence[float] | None = None) -> list[int]:
    """Split blocks ``0..B-1`` into ``len(speeds)`` consecutive non-empty slices, slice ``j`` on a
    device of speed ``speeds[j]`` (MAC/s), minimising the slowest stage (exact dynamic programme).

    A stage is the slice's compute plus, when ``cut_bytes`` (bytes leaving block ``b``) and
    ``s_per_byte`` (seconds per byte into device ``j``, both legs of the hop) are given, the
    transfer of the activation that enters it — so cuts land where the tensors are small.
    Returns the slices' end indices (exclusive); the last is ``B``."""
    B, n = len(block_macs), len(speeds)
    if not 1 <= n <= B:
        raise ValueError(f"cannot cut {B} blocks into {n} non-empty slices")
    prefix = [0.0]
    for m in block_macs:
        prefix.append(prefix[-1] + float(m))

    def transfer(j: int, s: int) -> float:
        if j == 0 or cut_bytes is None or s_per_byte is None:
            return 0.0
        return float(cut_bytes[s - 1]) * float(s_per_byte[j])

    inf = float("inf")
    # best[j][e]: min over cuts of the slowest stage, slices 0..j-1 covering blocks [0, e)
    best = [[inf] * (B + 1) for _ in range(n + 1)]
    arg = [[0] * (B + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for j in range(1, n + 1):
        for e in range(j, B - (n - j) + 1):
            for s in range(j - 1, e):
                t = max(best[j - 1][s], (prefix[e] - prefix[s]) / speeds[j - 1] + transfer(j - 1, s))
                if t < best[j][e]:
                    best[j][e], arg[j][e] = t, s
    ends, e = [], B
    for j in range(n, 0, -1):
        ends.append(e)
        e = arg[j][e]
    return ends[::-1]
