"""The margin rule: answer before the last reply when the missing replies cannot change the answer.

The margin rule. The aggregators rank the classes by a sum of per-reply contributions (VP: the
eq. 1-weighted softmax of each decompressed top-k reply, then a softmax that keeps the order;
VIP: the sum of the probabilities, the mean keeps the order). A missing reply from device ``j``
can raise any class over any other by at most its *swing* ``s_j``:

* VP: ``w_j · (e − 1) / (e + C − 1)`` — the largest gap between two entries of the softmax of a
  vector with entries in [0, 1] (the decompressed reply), times the device's eq. 1 weight;
* VIP: 1 (two probabilities differ by at most 1).

After each reply, in arrival order, the master compares the margin between its top two classes
with the sum of the swings of the devices still out (those it waits for, and any other whose
reply may still come); when ``margin > scale · Σ s_j`` it answers then, with the replies in so
far. ``scale = 1``: the top-1 answer is the one waiting would give (the proof is the bound).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from vip_ray.core.aggregation import softmax, topk_compress, topk_decompress, vp_weights

_ROW_BUDGET = 2_000_000   # floats of (rows, devices, classes) at once
#: aggregation rules the margin rule knows the swing of
ANYTIME_AGGREGATORS = ("vp", "vip")


class MarginRule:
    """The margin rule's view of a deployment's prediction bank ``probs`` (V, N, C): each (variant,
    sample) reply's additive contribution to the class scores (V, N, C), and each variant's swing
    (V,) — the most one reply can move one class over another. Computed once per deployment, so
    a request costs gathers, a cumulative sum and a partial sort."""

    def __init__(self, agg: Any, probs: np.ndarray):
        self.probs = probs
        v, _n, c = probs.shape
        self.kidx = None                 # per-device k (control.adaptive_k): device -> its k's block
        if agg.name == "vp":
            idx = np.arange(v)
            w = vp_weights(np.asarray(agg.rho)[idx], np.asarray(agg.width)[idx], agg.alpha,
                           rho_max=agg.rho_max, width_min=agg.width_min)
            k_device = getattr(agg, "k_device", None)
            ks = [agg.k] if k_device is None else sorted(set(k_device), key=lambda k: (k is None, k or 0))
            blocks = []
            for k in ks:                 # one (V, N, C) block per k in use; a reply's row: block · V + variant
                values, indices = topk_compress(probs, k)
                blocks.append(softmax(topk_decompress(values, indices, c, k), axis=-1) * w[:, None, None])
            self.bank = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=0)
            # the swing bound holds for any k (a decompressed reply's entries lie in [0, 1])
            self.swing = np.tile(w * (math.e - 1.0) / (math.e + c - 1.0), len(ks))
            if k_device is not None:
                self.kidx = np.array([ks.index(k) for k in k_device], dtype=np.int64)
                self.n_variants = v
        elif agg.name == "vip":
            self.bank = np.asarray(probs, dtype=np.float64)
            self.swing = np.ones(v)
        else:
            raise ValueError(f"anytime: aggregator {agg.name!r} has no margin rule; allowed: "
                             f"{', '.join(ANYTIME_AGGREGATORS)}")
        self.zero = len(self.bank)       # index of an all-zero row: a reply that is not in adds nothing
        self.bank_z = np.concatenate([self.bank, np.zeros((1,) + self.bank.shape[1:])], axis=0)

    def rows(self, timing: Any) -> Any:
        """``timing`` as the rule reads it: with a k per device, each reply's bank row is its
        device's k block plus its variant (-1, none, stays -1)."""
        if self.kidx is None:
            return timing
        from types import SimpleNamespace

        var = np.asarray(timing.variant)
        return SimpleNamespace(reply_at=timing.reply_at,
                               variant=np.where(var >= 0, self.kidx[None, :] * self.n_variants + var, var))


def early_answers(timing: Any, finish: np.ndarray, responded: np.ndarray, waits_for: np.ndarray,
                  rule: MarginRule, samples: np.ndarray, *, scale: float = 1.0,
                  min_replies: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``finish`` and ``responded`` with the requests the margin rule answers early changed: the
    finish at the deciding reply, only the replies in by then used. ``samples`` (R,): the test
    sample each request carries (the bank row its replies come from)."""
    finish = finish.copy()
    responded = responded.copy()
    r, d = responded.shape
    if r == 0 or d == 0:
        return finish, responded
    reply_at = timing.reply_at
    may_come = waits_for | responded                     # whose reply could still change the answer
    c = rule.bank.shape[-1]
    step = max(1, _ROW_BUDGET // max(1, d * c))
    for a in range(0, r, step):
        b = min(r, a + step)
        resp = responded[a:b]
        t = np.where(resp, reply_at[a:b], np.inf)
        order = np.argsort(t, axis=1, kind="stable")                       # arrival order
        var = np.maximum(np.take_along_axis(timing.variant[a:b], order, axis=1), 0)
        in_sorted = np.take_along_axis(resp, order, axis=1)                # (B, D) replied, in arrival order
        # a reply not in reads the bank's zero row; the running sums one device at a time (D is small)
        x = rule.bank_z[np.where(in_sorted, var, rule.zero), samples[a:b, None]]   # (B, D, C)
        margin = np.empty(in_sorted.shape)
        cum = np.zeros((b - a, c))
        for j in range(d):
            cum += x[:, j]
            if c > 1:
                top2 = np.partition(cum, c - 2, axis=1)[:, c - 2:]
                margin[:, j] = top2[:, 1] - top2[:, 0]
            else:
                margin[:, j] = cum[:, 0]
        out_swing = np.where(np.take_along_axis(may_come[a:b], order, axis=1), rule.swing[var], 0.0)
        remaining = out_swing.sum(axis=1, keepdims=True) - np.cumsum(out_swing * in_sorted, axis=1)
        count = np.cumsum(in_sorted, axis=1)
        ok = in_sorted & (count >= min_replies) & (margin > scale * np.maximum(remaining, 0.0))
        hit = ok.any(axis=1)
        j = np.argmax(ok, axis=1)
        t_sorted = np.take_along_axis(t, order, axis=1)
        when = t_sorted[np.arange(len(j)), j]
        early = hit & (when < finish[a:b])
        rows = np.flatnonzero(early)
        if len(rows):
            finish[a + rows] = when[rows]
            responded[a + rows] = resp[rows] & (t[rows] <= when[rows, None])
    return finish, responded
