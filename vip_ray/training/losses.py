"""Knowledge-distillation loss of VIP (§III-B)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    *,
    alpha: float = 0.5,
    temperature: float = 4.0,
) -> torch.Tensor:
    """``alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))``.

    Without teacher logits (KD off) this is plain cross-entropy. The T^2 factor keeps
    the soft-target gradients on the same scale as the hard-target ones (Hinton et al.).
    KL is averaged over the batch, as cross-entropy is.
    """
    ce = F.cross_entropy(student_logits, targets)
    if teacher_logits is None:
        return ce
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits.detach() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * ce + (1.0 - alpha) * (t * t) * kl
