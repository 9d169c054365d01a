"""Label-preserving augmentation for training a model that should generalise, not diversify.

VIP's diversity filters (vip_ray.diversity) make same-size students *differ*; the teacher instead
needs to be as accurate as it can on few images. Small random translations are the standard
augmentation for digits (they keep the label, unlike flips or quarter turns of a 6 or a 9).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(x: torch.Tensor, max_px: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate every image of a (B, C, H, W) batch by its own (dy, dx), each uniform in
    {-max_px, …, max_px}; pixels moved in from outside the image are 0 (background).

    All draws come from ``generator`` (CPU), so the same seed gives the same batch."""
    if max_px < 0:
        raise ValueError(f"max_px must be >= 0, got {max_px}")
    if max_px == 0:
        return x
    height, width = x.shape[-2:]
    shifts = torch.randint(-max_px, max_px + 1, (len(x), 2), generator=generator).tolist()
    padded = F.pad(x, (max_px, max_px, max_px, max_px))
    # output pixel (i, j) is input pixel (i - dy, j - dx): a window of the padded image
    return torch.stack([img[:, max_px - dy:max_px - dy + height, max_px - dx:max_px - dx + width]
                        for img, (dy, dx) in zip(padded, shifts)])
