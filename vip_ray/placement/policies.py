"""Built-in placement policies (one function each; registered by name)."""
from __future__ import annotations

from typing import Sequence

from vip_ray.placement.base import DeviceInfo, Placement, VariantInfo, register_placement


def _fits(d: DeviceInfo, v: VariantInfo, deadline_s: float, margin: float) -> bool:
    return d.compute_s(v) + d.network_s <= margin * deadline_s and v.bytes / 2**20 <= d.memory_mb


@register_placement("capacity")
def capacity_aware(devices: Sequence[DeviceInfo], variants: Sequence[VariantInfo], *, deadline_s: float,
                   margin: float = 0.8, distinct: bool = True) -> Placement:
    """Heterogeneous devices (VP): fastest device first, each gets the most accurate variant that
    fits its memory and answers within ``margin`` × deadline; variants are used once each before
    any repeats (``distinct``). A device where nothing fits the deadline still gets a variant —
    it may answer when it is idle — the fastest one on it among the least used so far (so the
    ensemble keeps its diversity), unless nothing fits its memory."""
    order = sorted(range(len(devices)), key=lambda i: -devices[i].macs_per_s)
    by_quality = sorted(variants, key=lambda v: (-v.accuracy, -v.macs, v.index))
    used: dict[int, int] = {}
    out = [-1] * len(devices)
    for i in order:
        d = devices[i]
        fitting = [v for v in by_quality if _fits(d, v, deadline_s, margin)]
        late = not fitting
        if late:  # nothing answers in time here: by expected latency, among those that fit in memory
            fitting = sorted((v for v in variants if v.bytes / 2**20 <= d.memory_mb),
                             key=lambda v: (d.compute_s(v) + d.network_s, v.macs, v.index))
        if distinct and fitting:
            fewest = min(used.get(v.index, 0) for v in fitting)
            fitting = [v for v in fitting if used.get(v.index, 0) == fewest]
        choice = fitting[0] if fitting else None
        if choice is not None:
            out[i] = choice.index
            used[choice.index] = used.get(choice.index, 0) + 1
    return out


@register_placement("diverse")
def diverse(devices: Sequence[DeviceInfo], variants: Sequence[VariantInfo], *, deadline_s: float,
            margin: float = 0.8) -> Placement:
    """Homogeneous devices (VIP): distinct diverse members, one per device in pool order (cycled
    when there are more devices than members), skipping members that do not fit a device."""
    out = [-1] * len(devices)
    k = 0
    for i, d in enumerate(devices):
        for step in range(len(variants)):
            v = variants[(k + step) % len(variants)]
            if _fits(d, v, deadline_s, margin) or step == len(variants) - 1:
                out[i] = v.index
                k = (k + step + 1) % len(variants)
                break
    return out


@register_placement("round_robin")
def round_robin(devices: Sequence[DeviceInfo], variants: Sequence[VariantInfo], *, deadline_s: float) -> Placement:
    """Variant i mod V on device i, ignoring speed and deadline (a baseline for placement studies)."""
    return [variants[i % len(variants)].index for i in range(len(devices))]
