import math

import torch

from vip_ray.training.losses import kd_loss


def test_kd_loss_equals_formula_on_hand_made_tensors():
    s = torch.tensor([[2.0, 0.0, -1.0]])
    t = torch.tensor([[1.0, 1.0, 0.0]])
    y = torch.tensor([0])
    alpha, temp = 0.3, 2.0
    ps = [math.exp(v / temp) for v in (2.0, 0.0, -1.0)]
    pt = [math.exp(v / temp) for v in (1.0, 1.0, 0.0)]
    ps = [v / sum(ps) for v in ps]
    pt = [v / sum(pt) for v in pt]
    kl = sum(a * math.log(a / b) for a, b in zip(pt, ps))
    ce = -math.log(math.exp(2.0) / (math.exp(2.0) + 1 + math.exp(-1.0)))
    expected = alpha * ce + (1 - alpha) * temp ** 2 * kl
    assert abs(kd_loss(s, y, t, alpha=alpha, temperature=temp).item() - expected) < 1e-6


def test_kd_off_is_cross_entropy_and_kl_vanishes_when_student_equals_teacher():
    s = torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(kd_loss(s, y, None), ce)
    assert torch.allclose(kd_loss(s, y, s.clone(), alpha=0.25), 0.25 * ce, atol=1e-6)
    # batchmean: the loss does not grow with the batch size
    assert torch.allclose(kd_loss(s.repeat(3, 1), y.repeat(3), s.repeat(3, 1) + 1.0, alpha=0.5),
                          kd_loss(s, y, s + 1.0, alpha=0.5), atol=1e-6)
