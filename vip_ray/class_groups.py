"""Class groups for class parallelism (CP) in the manner of sensAI, and the CP bank rows.

CP splits the C classes into G disjoint groups, one small model per group and device. The
model of group g has |g| + 1 outputs: its classes, then "other". Pure functions here (no
training, no Ray), so the grouping and the bank contract can be tested in closed form:

* :func:`group_sizes`, :func:`balanced_groups` — near-equal group sizes, contiguous classes;
* :func:`soft_confusion`, :func:`confusability_groups` — classes that a C-way probe model
  confuses on the *validation* split go together, so each group model learns the hard
  distinctions (sensAI's grouping rule);
* :func:`validation_indices` — the seeded, stratified validation split carved from train;
* :func:`group_targets`, :func:`cp_log_probs`, :func:`group_log_probs` — relabelling and
  the (N, C) bank rows of a group model (contract in :mod:`vip_ray.pool.store`).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

GROUPINGS = ("confusability", "balanced")
EXACT_LIMIT = 50_000  # balanced partitions enumerated exactly up to this count; beyond: local search
RESTARTS = 32         # local search: the greedy start plus this many seeded random starts


def group_sizes(num_classes: int, groups: int) -> list[int]:
    """Near-equal sizes, larger groups first: 10 classes in 3 groups -> [4, 3, 3]."""
    if not 1 <= groups <= num_classes:
        raise ValueError(f"groups must be in 1..{num_classes} for {num_classes} classes, got {groups}")
    q, r = divmod(num_classes, groups)
    return [q + 1] * r + [q] * (groups - r)


def balanced_groups(num_classes: int, groups: int) -> list[list[int]]:
    """Contiguous blocks of class indices with :func:`group_sizes`: 10 in 5 -> [[0, 1], [2, 3], ...]."""
    out, start = [], 0
    for size in group_sizes(num_classes, groups):
        out.append(list(range(start, start + size)))
        start += size
    return out


def validation_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) positions of the train split: each class sends round(fraction · n_c) to val.

    Seeded and stratified like the test split, so the same config gives the same validation set."""
    from vip_ray.data.datasets import stratified_split

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction!r}")
    labels = np.asarray(labels)
    return stratified_split(labels, np.arange(len(labels)), fraction, seed=(int(seed), 1729))


def soft_confusion(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) row-stochastic soft confusion: row i = mean predicted distribution of class i.

    Probabilities rather than argmax counts: a briefly trained probe makes few hard errors on a
    small validation set, but its probability mass on the wrong classes still says which
    classes look alike."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    out = np.zeros((num_classes, num_classes))
    np.add.at(out, labels, probs)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(f"classes {np.flatnonzero(counts == 0).tolist()} have no validation sample")
    return out / counts[:, None]


def affinity(confusion: np.ndarray) -> np.ndarray:
    """Symmetric confusability A = R + Rᵀ of the row-normalised confusion R, zero diagonal."""
    m = np.asarray(confusion, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion must be a square (C, C) matrix, got shape {m.shape}")
    if (m < 0).any():
        raise ValueError("confusion must be non-negative")
    rows = m.sum(axis=1, keepdims=True)
    r = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    a = r + r.T
    np.fill_diagonal(a, 0.0)
    return a


def within_group_affinity(a: np.ndarray, groups: Sequence[Sequence[int]]) -> float:
    """The objective: summed pairwise affinity inside the groups."""
    return float(sum(a[np.ix_(g, g)].sum() / 2.0 for g in groups))


def _count_partitions(sizes: Sequence[int]) -> int:
    n = math.factorial(sum(sizes))
    for s in sizes:
        n //= math.factorial(s)
    for s in set(sizes):
        n //= math.factorial(sizes.count(s))
    return n


def _partitions(items: tuple[int, ...], sizes: tuple[int, ...]) -> Iterator[list[tuple[int, ...]]]:
    """Every partition of ``items`` into groups of ``sizes`` (a multiset), each exactly once:
    the smallest remaining item opens the next group, with each distinct remaining size."""
    if not items:
        yield []
        return
    import itertools

    first, rest = items[0], items[1:]
    for size in sorted(set(sizes), reverse=True):
        left = list(sizes)
        left.remove(size)
        for others in itertools.combinations(rest, size - 1):
            group = (first, *others)
            remaining = tuple(x for x in rest if x not in others)
            for tail in _partitions(remaining, tuple(left)):
                yield [group, *tail]


def _greedy(a: np.ndarray, sizes: list[int]) -> list[list[int]]:
    """Fill groups one by one: seed with the most confusable unassigned class, then add the
    class most confusable with the group so far (ties: lowest index)."""
    left = list(range(len(a)))
    groups = []
    for size in sizes:
        sub = a[np.ix_(left, left)].sum(axis=1)
        g = [left[int(np.argmax(sub))]]
        left.remove(g[0])
        while len(g) < size:
            gain = a[np.ix_(left, g)].sum(axis=1)
            g.append(left[int(np.argmax(gain))])
            left.remove(g[-1])
        groups.append(g)
    return groups


def _improve_by_swaps(a: np.ndarray, groups: list[list[int]]) -> list[list[int]]:
    """Swap two classes of different groups while some swap raises the objective (best swap
    first; ties: lowest class pair). Swapping x ∈ g(x) with y ∈ g(y) gains
    S[y, g(x)] + S[x, g(y)] − 2·A[x, y] − S[x, g(x)] − S[y, g(y)], S[c, g] = Σ_{d ∈ g} A[c, d]."""
    c = len(a)
    of = np.empty(c, dtype=np.int64)
    for gi, g in enumerate(groups):
        of[g] = gi
    for _ in range(c * c):  # every swap strictly raises a bounded objective; this bounds the loop
        onehot = np.eye(len(groups))[of]            # (C, G)
        s = a @ onehot                              # S[c, g]
        own = s[np.arange(c), of]
        t = s[:, of].T                              # t[x, y] = S[y, g(x)]
        gain = t + t.T - 2 * a - own[:, None] - own[None, :]
        gain[of[:, None] == of[None, :]] = -np.inf
        x, y = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if gain[x, y] <= 1e-12:
            break
        of[x], of[y] = of[y], of[x]
    return [np.flatnonzero(of == gi).tolist() for gi in range(len(groups))]


def _canonical(groups: Sequence[Sequence[int]]) -> list[list[int]]:
    """Sorted classes inside each group; groups ordered by their smallest class."""
    return sorted((sorted(int(c) for c in g) for g in groups), key=lambda g: g[0])


def confusability_groups(confusion: np.ndarray, groups: int) -> list[list[int]]:
    """Partition the classes into ``groups`` near-equal groups (:func:`group_sizes`) that
    maximise the within-group confusability (:func:`affinity`).

    Exact (every balanced partition, first best in enumeration order) while there are at most
    ``EXACT_LIMIT`` of them (10 classes: at most 6,300); beyond, best-swap local search from
    the greedy start and ``RESTARTS`` random starts of a fixed seed, keeping the best (on random
    10-class matrices it matches the exact optimum). Deterministic: the same matrix gives the
    same groups."""
    a = affinity(confusion)
    c = len(a)
    sizes = group_sizes(c, groups)
    if _count_partitions(sizes) <= EXACT_LIMIT:
        best, best_val = None, -np.inf
        for part in _partitions(tuple(range(c)), tuple(sizes)):
            val = within_group_affinity(a, part)
            if val > best_val + 1e-12:
                best, best_val = part, val
        return _canonical(best)
    rng = np.random.default_rng(0)
    starts = [_greedy(a, sizes)]
    for _ in range(RESTARTS):
        perm, cut = rng.permutation(c).tolist(), np.cumsum([0, *sizes])
        starts.append([perm[cut[i]:cut[i + 1]] for i in range(len(sizes))])
    best = max((_improve_by_swaps(a, s) for s in starts), key=lambda g: within_group_affinity(a, g))
    return _canonical(best)


def check_groups(groups: Sequence[Sequence[int]], num_classes: int) -> None:
    """Every class in exactly one group, no empty group."""
    flat = [int(c) for g in groups for c in g]
    if any(len(g) == 0 for g in groups):
        raise ValueError("class groups must not be empty")
    if sorted(flat) != list(range(num_classes)):
        missing = sorted(set(range(num_classes)) - set(flat))
        extra = sorted({c for c in flat if flat.count(c) > 1 or not 0 <= c < num_classes})
        raise ValueError(f"class groups must partition 0..{num_classes - 1}: missing {missing}, "
                         f"repeated or out of range {extra}")


def group_targets(labels, classes: Sequence[int], num_classes: int):
    """Labels in the group model's output space: position in ``classes``, else |g| ("other").

    Works on NumPy arrays and torch tensors alike."""
    table = np.full(num_classes, len(classes), dtype=np.int64)
    table[list(classes)] = np.arange(len(classes))
    if type(labels).__module__.split(".")[0] == "torch":  # a tensor: index on its device
        import torch

        return torch.as_tensor(table, device=labels.device)[labels]
    return table[np.asarray(labels)]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def cp_log_probs(group_logits: np.ndarray, classes: Sequence[int], num_classes: int) -> np.ndarray:
    """(N, |g|+1) group-model logits -> (N, C) bank rows of log-probabilities.

    Row n: for c in g, ``log softmax(z)[c]``; for every other class, ``log(p_other / (C - |g|))``,
    so ``softmax(row)`` is a proper distribution over the C classes."""
    z = np.asarray(group_logits)
    k = len(classes)
    if z.ndim != 2 or z.shape[1] != k + 1:
        raise ValueError(f"group logits must be (N, {k + 1}) for a group of {k} classes, got {z.shape}")
    if k >= num_classes:
        raise ValueError(f"a group must leave some class out: {k} classes of {num_classes}")
    lp = _log_softmax(z)
    out = np.repeat(lp[:, k:] - math.log(num_classes - k), num_classes, axis=1)
    out[:, list(classes)] = lp[:, :k]
    return out.astype(np.float32)


def group_log_probs(bank_rows: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`cp_log_probs`: (..., C) bank rows -> (..., |g|+1) log-probabilities."""
    rows = _log_softmax(bank_rows)
    mask = np.zeros(rows.shape[-1], dtype=bool)
    mask[list(classes)] = True
    rest = rows[..., ~mask]
    m = rest.max(axis=-1, keepdims=True)
    other = m + np.log(np.exp(rest - m).sum(axis=-1, keepdims=True))
    return np.concatenate([rows[..., list(classes)], other], axis=-1)


def class_weights(train_targets: np.ndarray, num_outputs: int, other_weight: str | float) -> np.ndarray:
    """Loss weights of the |g|+1 outputs: ``balanced`` = N / (K · n_k) (each output weighs as
    much as "other", which otherwise dominates); a number = weight of "other", 1 for the rest."""
    if other_weight == "balanced":
        counts = np.bincount(np.asarray(train_targets), minlength=num_outputs).astype(np.float64)
        if (counts == 0).any():
            raise ValueError(f"outputs {np.flatnonzero(counts == 0).tolist()} have no training sample")
        return counts.sum() / (num_outputs * counts)
    w = np.ones(num_outputs)
    w[-1] = float(other_weight)
    return w
