"""Size and cost of a built model, counted the way the VP / VIP papers' tables count them."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from vip_ray.models.registry import VariantNet


def count_params(model: nn.Module) -> int:
    """Trainable + non-trainable parameters, Keras style: BN running mean/var count, the step counter does not.

    Both papers report Keras summaries, where BN moving statistics are non-trainable weights.
    """
    running_stats = sum(m.running_mean.numel() + m.running_var.numel()
                        for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats)
    return sum(p.numel() for p in model.parameters()) + running_stats


@torch.no_grad()
def count_macs(model: VariantNet) -> int:
    """Multiply-accumulates of Conv2d and Linear layers for one image at ``model.input_size``."""
    total = 0

    def conv_macs(conv: nn.Conv2d, inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]

    def linear_macs(linear: nn.Linear, inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * linear.in_features

    hooks = [m.register_forward_hook(conv_macs if isinstance(m, nn.Conv2d) else linear_macs)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        model(torch.zeros(1, 3, model.input_size, model.input_size, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total


def profile_model(model: VariantNet) -> dict[str, int]:
    """params (see ``count_params``), macs (see ``count_macs``) and bytes of the state_dict tensors."""
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return dict(params=count_params(model), macs=count_macs(model), bytes=state_bytes)
