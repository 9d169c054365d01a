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
from typing import Any, Callable

import numpy as np

from vip_ray.core.aggregation import softmax, topk_compress, topk_decompress, vp_weights

_ROW_BUDGET = 2_000_000   # floats of (rows, devices, classes) at once
#: aggregation rules the margin rule knows the swing of
ANYTIME_AGGREGATORS = ("vp", "vip")


def contributions(agg: Any, probs: np.ndarray, variant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (request, device): the reply's additive contribution to the class scores (B, D, C) and
    its swing (B, D) — the most it can move one class over another."""
    c = probs.shape[-1]
    if agg.name == "vp":
        w = vp_weights(np.asarray(agg.rho)[variant], np.asarray(agg.width)[variant], agg.alpha,
                       rho_max=agg.rho_max, width_min=agg.width_min)
        values, indices = topk_compress(probs, agg.k)
        dense = softmax(topk_decompress(values, indices, c, agg.k), axis=-1)
        return dense * w[..., None], w * (math.e - 1.0) / (math.e + c - 1.0)
    if agg.name == "vip":
        return np.asarray(probs, dtype=np.float64), np.ones(variant.shape)
    raise ValueError(f"anytime: aggregator {agg.name!r} has no margin rule; allowed: {', '.join(ANYTIME_AGGREGATORS)}")


def early_answers(timing: Any, finish: np.ndarray, responded: np.ndarray, waits_for: np.ndarray,
                  probs_rows: Callable[[int, int], np.ndarray], agg: Any, *, scale: float = 1.0,
                  min_replies: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``finish`` and ``responded`` with the requests the margin rule answers early changed: the
    finish at the deciding reply, only the replies in by then used."""
    finish = finish.copy()
    responded = responded.copy()
    r, d = responded.shape
    if r == 0 or d == 0:
        return finish, responded
    reply_at = timing.reply_at
    may_come = waits_for | responded                     # whose reply could still change the answer
    c = probs_rows(0, 1).shape[-1]
    step = max(1, _ROW_BUDGET // max(1, d * c))
    for a in range(0, r, step):
        b = min(r, a + step)
        probs = probs_rows(a, b)
        resp = responded[a:b]
        t = np.where(resp, reply_at[a:b], np.inf)
        order = np.argsort(t, axis=1, kind="stable")                       # arrival order
        contrib, swing = contributions(agg, probs, np.where(resp | may_come[a:b], timing.variant[a:b], 0))
        in_sorted = np.take_along_axis(resp, order, axis=1)                # (B, D) replied, in arrival order
        cum = np.cumsum(np.take_along_axis(contrib, order[..., None], axis=1) * in_sorted[..., None], axis=1)
        top2 = -np.partition(-cum, 1, axis=2)[..., :2] if c > 1 else np.concatenate([cum, cum * 0], axis=2)
        margin = top2[..., 0] - top2[..., 1]                                # (B, D) after each reply
        out_swing = np.where(may_come[a:b], swing, 0.0)
        remaining = out_swing.sum(axis=1, keepdims=True) - np.cumsum(
            np.take_along_axis(out_swing, order, axis=1) * in_sorted, axis=1)
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
