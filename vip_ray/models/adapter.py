"""Everything a variant does to a raw image before its backbone.

Training, the prediction bank and a live server all feed raw [0, 1] images into the same
``InputAdapter``, so a variant sees identical inputs wherever it runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_POSITIONS = ("center", "random")


def crop_size(side: int, reduction: float) -> int:
    """Side length left after cutting ``reduction`` (e.g. 0.12 for VIP's 12 % crop) off ``side``."""
    return max(1, round(side * (1.0 - reduction)))


class InputAdapter(nn.Module):
    """Raw (B, 1|3, H, W) images in [0, 1] -> normalised (B, 3, input_size, input_size).

    Steps: grey -> RGB by repetition; crop each side to ``crop_size(side, crop_reduction)``
    (random offset per image in train mode with ``crop_position="random"``, centred otherwise);
    bilinear resize to ``input_size``; ImageNet mean/std normalisation.
    """

    def __init__(self, input_size: int, crop_reduction: float = 0.0, crop_position: str = "center") -> None:
        super().__init__()
        if not 0.0 <= crop_reduction < 1.0:
            raise ValueError(f"crop_reduction must be in [0, 1), got {crop_reduction}")
        if crop_position not in CROP_POSITIONS:
            raise ValueError(f"crop_position must be one of {CROP_POSITIONS}, got {crop_position!r}")
        self.input_size = input_size
        self.crop_reduction = crop_reduction
        self.crop_position = crop_position
        # Not persistent: constants, so they stay out of checkpoints and parameter counts.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"expected 1 or 3 input channels, got {x.shape[1]}")
        x = self._crop(x)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        crop_h, crop_w = crop_size(height, self.crop_reduction), crop_size(width, self.crop_reduction)
        if (crop_h, crop_w) == (height, width):
            return x
        if self.training and self.crop_position == "random":
            tops = torch.randint(0, height - crop_h + 1, (len(x),)).tolist()
            lefts = torch.randint(0, width - crop_w + 1, (len(x),)).tolist()
            return torch.stack([img[:, t:t + crop_h, l:l + crop_w] for img, t, l in zip(x, tops, lefts)])
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        return x[..., top:top + crop_h, left:left + crop_w]

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, crop_reduction={self.crop_reduction}, "
                f"crop_position={self.crop_position!r}")
