"""Aggregation of variant predictions — the one implementation that the pool report,
the SimPy simulator and the Serve emulation all use.

Shapes: ``probs`` is (B, V, C) — per request B, per variant V, per class C — and
``responded`` is a (B, V) boolean mask of the variants whose reply arrived in time.
Rows where nobody responded come back as NaN (callers decide the fallback policy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from vip_ray.core.registry import Registry

FP_BYTES = 4  # fp32 on the wire


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def index_bytes(num_classes: int) -> int:
    """Bytes per class index: 1 up to 256 classes (VP's h(k)), more beyond."""
    return max(1, math.ceil(math.log2(max(num_classes, 2)) / 8))


def reply_bytes(k: int | None, num_classes: int, fp_bytes: int = FP_BYTES) -> int:
    """VP eq. 3: h(k) = min(k·(size(fp)+1), size(fp)·C) for k > 1, 1 for k = 1.

    ``k=None`` means the full vector (C floats). The "+1" is the index byte; for more
    than 256 classes an index needs more than one byte and we count it so.
    """
    if k is None or k >= num_classes:
        return fp_bytes * num_classes
    if k < 1:
        raise ValueError(f"k must be >= 1 or None (all), got {k}")
    if k == 1:
        return index_bytes(num_classes)
    return min(k * (fp_bytes + index_bytes(num_classes)), fp_bytes * num_classes)


def topk_compress(probs: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each prediction vector: (values, indices), each (..., k). k=None keeps all."""
    c = probs.shape[-1]
    k = c if k is None else min(k, c)
    idx = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(probs, idx, axis=-1), idx


def topk_dense(probs: np.ndarray, k) -> np.ndarray:
    """The replies as the master decompresses them, (..., V, C): ``k`` one top-k for every reply
    (an int, ``None``: the full vector), or one per variant column (a sequence of length V, as a
    controller that picks each device's k gives). Per column, the same as compressing and
    decompressing that column alone (one sort to the largest k, the extra entries masked)."""
    c = probs.shape[-1]
    if k is None or np.ndim(k) == 0:
        values, indices = topk_compress(probs, k)
        return topk_decompress(values, indices, c, k)
    ks = np.array([c if x is None else min(int(x), c) for x in k], dtype=np.int64)
    if len(ks) != probs.shape[-2]:
        raise ValueError(f"k: one per variant column ({probs.shape[-2]}), got {len(ks)}")
    kmax = int(ks.max())
    values, indices = topk_compress(probs, kmax)
    # a k = 1 reply carries only the index (one-hot); entries past a column's k never travelled
    vals = np.where((ks == 1)[:, None], 1.0, values)
    vals = np.where(np.arange(kmax) < ks[:, None], vals, 0.0)
    out = np.zeros(probs.shape, dtype=np.float64)
    np.put_along_axis(out, indices, vals, axis=-1)
    return out


def topk_decompress(values: np.ndarray, indices: np.ndarray, num_classes: int, k: int | None) -> np.ndarray:
    """Scatter compressed replies back into (..., C). With k=1 only the index travels
    (h(1) = 1 byte), so the decompressed vector is one-hot."""
    out = np.zeros(values.shape[:-1] + (num_classes,), dtype=np.float64)
    vals = np.ones_like(values, dtype=np.float64) if k == 1 else values
    np.put_along_axis(out, indices, vals, axis=-1)
    return out


def vp_weights(rho, width, alpha: float, *, rho_max: float, width_min: float) -> np.ndarray:
    """VP eq. 1 weights (ρ_i / max P)·(d_i / min D)^α for arrays of any shape, with the
    deployment's max ρ and min d given (e.g. per request when placement changes mid-run)."""
    return (np.asarray(rho, dtype=np.float64) / rho_max) * (np.asarray(width, dtype=np.float64) / width_min) ** alpha


def vp_scale(rho: Sequence[float], depth: Sequence[float], alpha: float) -> np.ndarray:
    """VP eq. 1 weights (ρ_i / max P)·(d_i / min D)^α over the deployed variants."""
    rho = np.asarray(rho, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64)
    return vp_weights(rho, depth, alpha, rho_max=rho.max(), width_min=depth.min())


def _masked(responded: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    return np.ones(shape, dtype=bool) if responded is None else np.asarray(responded, dtype=bool)


def vp_aggregate(
    probs: np.ndarray,
    *,
    k: int | None | Sequence = 2,
    rho: Sequence[float] | None = None,
    depth: Sequence[float] | None = None,
    alpha: float = 1.0,
    weights: np.ndarray | None = None,
    responded: np.ndarray | None = None,
) -> np.ndarray:
    """VP §III-C/D: compress top-k, decompress into (B, V, C), softmax,
    scale by eq. 1, sum over the variants that answered, softmax.

    The eq. 1 weights come from ``rho``/``depth`` per variant (V,), or ready-made as
    ``weights`` of shape (V,) or (B, V) — per request when placement changes during a run.
    ``k``: one for every reply, or one per variant column (V,) (:func:`topk_dense`)."""
    b, v, c = probs.shape
    mask = _masked(responded, (b, v))
    if weights is None:
        if rho is None or depth is None:
            raise ValueError("vp_aggregate needs rho and depth, or weights")
        weights = vp_scale(rho, depth, alpha)
    w = np.asarray(weights, dtype=np.float64)
    w = w[None, :, None] if w.ndim == 1 else w[..., None]
    dense = softmax(topk_dense(probs, k), axis=-1)
    summed = np.where(mask[..., None], dense * w, 0.0).sum(axis=1)
    out = softmax(summed, axis=-1)
    out[~mask.any(axis=1)] = np.nan
    return out


def vip_aggregate(probs: np.ndarray, *, responded: np.ndarray | None = None, **_: object) -> np.ndarray:
    """VIP §III-D: average of the probabilities of the variants that answered."""
    b, v, _c = probs.shape
    mask = _masked(responded, (b, v))
    n = mask.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mask[..., None], probs, 0.0).sum(axis=1) / n


def majority_aggregate(probs: np.ndarray, *, responded: np.ndarray | None = None, **_: object) -> np.ndarray:
    """Majority vote of the top-1 labels; ties go to the larger summed probability.
    Returns vote shares (+ a tie-breaking epsilon), so argmax gives the winner."""
    b, v, c = probs.shape
    mask = _masked(responded, (b, v))
    votes = np.zeros((b, c))
    top = probs.argmax(axis=-1)
    np.add.at(votes, (np.repeat(np.arange(b), v), top.ravel()), mask.ravel().astype(float))
    tie_break = np.where(mask[..., None], probs, 0.0).sum(axis=1) * 1e-6
    out = votes + tie_break
    with np.errstate(invalid="ignore", divide="ignore"):
        out = out / out.sum(axis=1, keepdims=True)
    out[~mask.any(axis=1)] = np.nan
    return out


def cp_aggregate(probs: np.ndarray, *, responded: np.ndarray | None = None,
                 classes: np.ndarray | None = None, **_: object) -> np.ndarray:
    """Class parallelism (sensAI): every class is scored by the one group model that owns it.

    ``probs`` (B, G, C) are the softmaxed bank rows of the G group models (device order),
    ``classes`` (G, C) bool says which classes each group owns (each class at most one owner).
    score[b, c] = probs[b, owner(c), c], the owner's in-group probability of c; the master picks
    the class with the highest score over all groups. The master needs every group's answer: a
    row where some class has no owner among the responders is all-NaN.
    """
    if classes is None:
        raise ValueError("the cp aggregator needs classes= (G, C) bool: which classes each group model owns "
                         "(it serves strategy cp over a class-parallel pool)")
    b, g, c = probs.shape
    owner = np.asarray(classes, dtype=bool)
    if owner.shape not in ((g, c), (b, g, c)):
        raise ValueError(f"classes must be (G, C) = ({g}, {c}) or (B, G, C) to match probs, got {owner.shape}")
    if (owner.sum(axis=-2) > 1).any():
        raise ValueError(f"classes {np.flatnonzero((owner.sum(axis=-2) > 1).reshape(-1, c).any(axis=0)).tolist()} "
                         f"are owned by more than one group")
    mask = _masked(responded, (b, g))
    own = (owner if owner.ndim == 3 else owner[None]) & mask[..., None]  # (B, G, C)
    out = np.where(own, probs, 0.0).sum(axis=1)
    out[~own.any(axis=1).all(axis=1)] = np.nan
    return out


def first_aggregate(probs: np.ndarray, *, responded: np.ndarray | None = None, **_: object) -> np.ndarray:
    """The probabilities of the first device (in device order) that answered; NaN rows where none
    did (strategy single: one device runs the whole model)."""
    b, v, _c = probs.shape
    mask = _masked(responded, (b, v))
    out = probs[np.arange(b), np.argmax(mask, axis=1)].astype(np.float64, copy=True)
    out[~mask.any(axis=1)] = np.nan
    return out


def cp_reply_bytes(group_size: int, fp_bytes: int = FP_BYTES) -> int:
    """Bytes of one CP reply: the group's |g| class scores as floats ("other" is implied)."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return fp_bytes * group_size


@dataclass(frozen=True)
class Aggregator:
    name: str
    fn: Callable[..., np.ndarray]
    doc: str


#: every aggregation rule by name: ``strategy.aggregator`` in a scenario is checked against it
AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


def register_aggregator(name: str, doc: str = ""):
    """Register an aggregation rule under ``name`` (extension hook for users):
    ``fn(probs (B, V, C), *, responded (B, V), **params) -> (B, C)``, NaN rows where nobody answered."""

    def wrap(fn):
        first_line = next(iter((fn.__doc__ or "").strip().splitlines()), "")  # a lambda has no docstring
        AGGREGATORS.register(name, Aggregator(name, fn, doc or first_line))
        return fn

    return wrap


register_aggregator("vp")(vp_aggregate)
register_aggregator("vip")(vip_aggregate)
register_aggregator("majority")(majority_aggregate)
register_aggregator("cp")(cp_aggregate)  # callers pass classes= (G, C) besides responded=
register_aggregator("first")(first_aggregate)


def get_aggregator(name: str) -> Callable[..., np.ndarray]:
    """The rule registered as ``name``; :class:`UnknownName` (a KeyError) lists the allowed ones."""
    return AGGREGATORS.get(name).fn


@dataclass(frozen=True)
class AggregationSpec:
    """How the master of a deployment aggregates replies: the rule, the reply top-k, the VP eq. 1
    weights of every pool variant with the deployment's max ρ and min d, and for ``cp`` the
    classes each variant owns. Plain data (it travels to the Serve ingress); the simulator's
    tables and the ingress call it alike. It knows the size of each variant's reply."""

    name: str
    k: int | None
    alpha: float
    rho: tuple[float, ...]          # per selected pool variant: input size ρ_i
    width: tuple[float, ...]        # per selected pool variant: VP's depth multiplier d_i (channel width)
    rho_max: float
    width_min: float
    num_classes: int = 0
    classes: tuple[tuple[int, ...], ...] | None = None   # cp: the classes each variant owns
    #: vp: each device's own top-k (device order), as a controller picked it
    #: (``control.adaptive_k``, :mod:`vip_ray.control.topk`); None: ``k`` for every device
    k_device: tuple | None = None

    @classmethod
    def build(cls, name: str, k: int | None, alpha: float, variants: Sequence, placed: Sequence[int], *,
              num_classes: int = 0, classes: Sequence[Sequence[int]] | None = None) -> "AggregationSpec":
        """``variants``: pool member records (``input_size``, ``width``); ``placed``: the
        indices of those that some device runs at some time (all of them if none is placed)."""
        get_aggregator(name)  # an unknown rule fails here, naming the allowed ones
        if name == "cp" and classes is None:
            raise ValueError("the cp aggregator needs the classes each variant owns")
        rho = tuple(float(v.input_size) for v in variants)
        # VP eq. 1's d_i is the variant's depth multiplier in MobileNet's sense, its channel width
        # factor (0.35 for V1–V7; 0.5 for the ImageNet variants, VP §IV-E), not the last conv's j
        width = tuple(float(v.width) for v in variants)
        idx = sorted(set(p for p in placed if p >= 0)) or list(range(len(variants)))
        cl = tuple(tuple(int(c) for c in g) for g in classes) if classes is not None else None
        return cls(name, k, float(alpha), rho, width, max(rho[i] for i in idx), min(width[i] for i in idx),
                   int(num_classes), cl)

    def reply_bytes(self, variant: int) -> int:
        """Bytes on the wire of a reply from ``variant``: its class group's scores for ``cp``,
        else the top-k (values + indices) or the full vector."""
        if self.classes is not None:
            return cp_reply_bytes(len(self.classes[variant]))
        return reply_bytes(self.k, self.num_classes)

    def device_reply_bytes(self, device: int) -> int:
        """Bytes of a reply of ``device`` under its own k (``k_device``)."""
        return reply_bytes(self.k_device[device], self.num_classes)

    def owners(self) -> np.ndarray:
        """(V, C) bool: the classes each variant owns (``cp``)."""
        out = np.zeros((len(self.classes), self.num_classes), dtype=bool)
        for v, g in enumerate(self.classes):
            out[v, list(g)] = True
        return out

    def __call__(self, probs: np.ndarray, variant: np.ndarray, responded: np.ndarray) -> np.ndarray:
        """(B, C) aggregate of ``probs`` (B, D, C) from the devices in ``responded`` (B, D), device
        ``d`` of request ``b`` having run pool variant ``variant[b, d]``; NaN rows: nobody answered."""
        kwargs: dict = {"responded": responded}
        if self.name == "vp":
            v = np.where(responded, variant, 0)
            kwargs.update(k=self.k if self.k_device is None else self.k_device,
                          weights=vp_weights(np.asarray(self.rho)[v], np.asarray(self.width)[v], self.alpha,
                                             rho_max=self.rho_max, width_min=self.width_min))
        elif self.name == "cp":
            kwargs.update(classes=self.owners()[np.where(responded, variant, 0)] & np.asarray(responded)[..., None])
        return get_aggregator(self.name)(probs, **kwargs)
