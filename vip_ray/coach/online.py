"""COACH's online component (COACH §III-C, eq. 7–11, Algorithm 1 lines 17–27).

* :class:`SemanticCache` — one semantic centre per label, warmed on calibration features and
  updated as a running mean (eq. 7); cosine similarity degrees to every centre (eq. 8).
* :func:`separability` — task separability S (eq. 9).
* :class:`OnlinePolicy` — early exit when S > S_ext with the most similar label as the answer
  (eq. 10); otherwise the required precision Q_r from the thresholds S_adj, then the bit width
  Q_c ≥ Q_r that balances the pipeline at the current bandwidth (eq. 11).
* :func:`calibrate_policy` — S_ext and S_adj from calibration data so that the online decisions
  cost at most ε accuracy against the offline plan alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Decision:
    """A task's fate: ``exit`` (answer on the end device) or send the last tensor at ``bits``."""

    exit: bool
    bits: int


class SemanticCache:
    """Per-label semantic centres T_j^c and task counts m_j.

    ``max_count`` caps m_j (None: the plain running mean of eq. 7). With a cap the centre keeps
    following the recent context — the weight of a new feature never drops below 1/(cap+1).
    """

    def __init__(self, num_classes: int, dim: int, max_count: int | None = None):
        if max_count is not None and max_count < 1:
            raise ValueError(f"max_count must be >= 1 or None, got {max_count}")
        self.centres = np.zeros((num_classes, dim), dtype=np.float64)
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.max_count = max_count

    def warm(self, features: np.ndarray, labels: np.ndarray) -> "SemanticCache":
        """Eq. 7 over calibration features, one by one in the given order."""
        for f, y in zip(np.asarray(features, dtype=np.float64), np.asarray(labels)):
            self.update(int(y), f)
        return self

    def update(self, label: int, feature: np.ndarray) -> None:
        """Eq. 7: T_j ← (m_j T_j + F) / (m_j + 1), then m_j ← m_j + 1 (capped)."""
        m = self.counts[label]
        self.centres[label] = (m * self.centres[label] + feature) / (m + 1)
        self.counts[label] = m + 1 if self.max_count is None else min(m + 1, self.max_count)

    def similarities(self, feature: np.ndarray) -> np.ndarray:
        """Eq. 8: cosine similarity to every centre, clipped to [0, 1] (a label never seen: 0)."""
        f = np.asarray(feature, dtype=np.float64)
        norms = np.linalg.norm(self.centres, axis=1) * np.linalg.norm(f)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(norms > 0, self.centres @ f / norms, 0.0)
        return np.clip(cos, 0.0, 1.0)

    def similarities_batch(self, features: np.ndarray) -> np.ndarray:
        """Eq. 8 for many features against the current centres, (N, C)."""
        f = np.asarray(features, dtype=np.float64)
        norms = np.linalg.norm(f, axis=1, keepdims=True) * np.linalg.norm(self.centres, axis=1)[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(norms > 0, f @ self.centres.T / norms, 0.0)
        return np.clip(cos, 0.0, 1.0)


def separability(t: np.ndarray) -> float | np.ndarray:
    """Eq. 9: S = ||T||_2 · (t_H − t_SH) · t_H / t_SH, t_H and t_SH the two highest similarity
    degrees. A second-highest of 0 with a positive highest gives +inf (nothing competes).
    Works on one vector (C,) or a batch (N, C)."""
    t = np.asarray(t, dtype=np.float64)
    top2 = -np.sort(-t, axis=-1)[..., :2]
    th, tsh = top2[..., 0], top2[..., 1]
    norm = np.linalg.norm(t, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(tsh > 0, norm * (th - tsh) * th / np.where(tsh > 0, tsh, 1.0),
                     np.where(th > 0, np.inf, 0.0))
    return float(s) if s.ndim == 0 else s


@dataclass
class OnlinePolicy:
    """Thresholds and the offline plan's precision.

    * ``s_ext`` — early exit when S > s_ext (eq. 10).
    * ``s_adj`` — ``(threshold, bits)`` pairs: a task with S > threshold may go at ``bits``; the
      required precision Q_r is the fewest such bits, else ``q_offline``.
    * ``grid`` — the bit widths eq. 11 chooses from (those ≥ Q_r).
    """

    s_ext: float
    s_adj: list[tuple[float, int]]
    q_offline: int
    grid: tuple[int, ...]
    calibration: dict = field(default_factory=dict)

    def exits(self, s: float) -> bool:
        return s > self.s_ext

    def required_bits(self, s: float) -> int:
        ok = [b for thr, b in self.s_adj if s > thr]
        return min(ok) if ok else self.q_offline

    def choose_bits(self, q_required: int, cost: Callable[[int], float]) -> int:
        """Eq. 11: among the widths ≥ Q_r, the one whose pipeline cost (``cost(bits)``: eq. 11's
        bubble |T'_t − max{T_e, T'_t, T_c}| plus the maximum stage, as in eq. 6 — the bubble alone
        is 0 for every width that makes the link the bottleneck) is least; ties to fewer bits."""
        options = [b for b in self.grid if b >= q_required] or [max(self.grid)]
        return min(options, key=lambda b: (round(cost(b), 12), b))


def balance_cost(t_end: float, t_cloud: float, t_tx: float) -> float:
    """Eq. 11's bubble plus the maximum stage (the eq. 6 terms that depend on the link)."""
    m = max(t_end, t_tx, t_cloud)
    return abs(t_tx - m) + m


def _largest_safe_prefix(gain: np.ndarray, budget: float) -> int:
    """How many of the (ordered) samples can switch before the running correctness loss
    exceeds ``budget`` (counts; a gain of -1 is one more mistake)."""
    loss = -np.cumsum(gain)
    ok = np.flatnonzero(loss <= budget + 1e-9)
    return int(ok[-1]) + 1 if len(ok) else 0


def _threshold(sorted_s: np.ndarray, k: int) -> float:
    """The S threshold that lets exactly the first k (descending) samples through (S > thr)."""
    if k <= 0:
        return float(sorted_s[0]) if len(sorted_s) else math.inf
    # all of them: the lowest calibration S is the floor (a task less separable than any seen
    # during calibration does not pass)
    return float(sorted_s[min(k, len(sorted_s) - 1)])


def calibrate_policy(s: np.ndarray, exit_pred: np.ndarray, labels: np.ndarray, pred_by_bits: dict[int, np.ndarray],
                     q_offline: int, grid: Sequence[int], eps: float) -> OnlinePolicy:
    """S_ext and S_adj on calibration tasks (Algorithm 1, line 19).

    ``s``, ``exit_pred``: each task's separability and eq. 10 answer against the warmed centres;
    ``pred_by_bits[b]``: the cloud's answer with the task's tensor at b bits (``q_offline`` too).
    The reference is the offline plan (every task at ``q_offline``, no exit). Half of the budget
    ε goes to the early exit (the highest-S tasks exit while the loss allows), the rest to the
    precision thresholds (from the fewest bits up: the highest-S remaining tasks may drop to b).
    """
    s = np.asarray(s, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(labels)
    ref_ok = pred_by_bits[q_offline] == labels
    order = np.argsort(-s, kind="stable")
    sorted_s = s[order]
    budget = eps * n
    # early exit: switching task i from the cloud's answer to the cache's changes correctness by gain[i]
    gain = (exit_pred == labels).astype(int)[order] - ref_ok.astype(int)[order]
    k = _largest_safe_prefix(gain, budget / 2)
    while k > 0 and k < n and sorted_s[k - 1] == sorted_s[k]:
        k -= 1                              # ties: a threshold cannot split equal S
    s_ext = _threshold(sorted_s, k)
    used = -int(gain[:k].sum())
    exited = np.zeros(n, dtype=bool)
    exited[order[:k]] = True
    # precision thresholds: fewer bits need a higher S; thresholds are nested
    current_ok = ref_ok.copy()
    current_bits = np.full(n, q_offline)
    s_adj: list[tuple[float, int]] = []
    lower = [b for b in sorted(grid) if b < q_offline]
    spent = used
    floor_thr = -math.inf
    for b in reversed(lower):               # q_offline-1 first (the easiest), then fewer bits
        ok_b = pred_by_bits[b] == labels
        cand = order[(~exited[order]) & (current_bits[order] > b)]
        g = ok_b[cand].astype(int) - current_ok[cand].astype(int)
        kk = _largest_safe_prefix(g, budget - spent)
        cs = s[cand]
        while kk > 0 and kk < len(cand) and cs[kk - 1] == cs[kk]:
            kk -= 1
        thr = _threshold(cs, kk) if len(cand) else math.inf
        thr = max(thr, floor_thr)           # fewer bits never on an easier condition
        take = cand[s[cand] > thr]
        spent -= int((ok_b[take].astype(int) - current_ok[take].astype(int)).sum())
        current_ok[take] = ok_b[take]
        current_bits[take] = b
        floor_thr = thr
        if math.isfinite(thr):
            s_adj.append((thr, b))
    acc_ref = float(ref_ok.mean()) if n else float("nan")
    final_ok = np.where(exited, exit_pred == labels, current_ok)
    cal = {"tasks": n, "reference_accuracy": acc_ref, "online_accuracy": float(final_ok.mean()) if n else float("nan"),
           "exit_ratio": float(exited.mean()) if n else 0.0, "mean_bits": float(current_bits[~exited].mean()) if (~exited).any() else 0.0,
           "eps": eps}
    return OnlinePolicy(float(s_ext), sorted(s_adj, key=lambda p: p[1]), int(q_offline), tuple(sorted(grid)), cal)
