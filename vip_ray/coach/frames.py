"""Continuous frames with temporal correlation (COACH §IV-B, Table II): which test sample each
request carries.

Image data sets have no videos, so a video is modelled by its two effects on what the camera
sees: scenes (runs of frames of one class, geometric lengths with mean ``run_length_mean``) and
static shots (with probability ``repeat_prob`` a frame shows the previous frame's sample again).
``low`` — random frames (i.i.d. samples, the draw every other strategy uses for the same seed);
``medium`` — runs of one class; ``high`` — longer runs with static shots. See
``vip_ray.scenario.schema.Frames`` for the presets.
"""
from __future__ import annotations

import numpy as np


def frame_samples(labels: np.ndarray, n: int, rng: np.random.Generator, *, run_length_mean: float = 1.0,
                  repeat_prob: float = 0.0) -> np.ndarray:
    """``n`` sample indices into ``labels`` (the test split in bank order)."""
    labels = np.asarray(labels)
    if run_length_mean < 1 or not 0 <= repeat_prob < 1:
        raise ValueError(f"run_length_mean must be >= 1 and repeat_prob in [0, 1), got {run_length_mean}, {repeat_prob}")
    if run_length_mean == 1 and repeat_prob == 0:
        return rng.integers(0, len(labels), size=n)       # what request_table draws for every strategy
    classes, counts = np.unique(labels, return_counts=True)
    members = [np.flatnonzero(labels == c) for c in classes]
    weights = counts / counts.sum()
    switch = 1.0 / run_length_mean
    u = rng.random((n, 2))                                # one stream, fixed draws per frame
    new_class = rng.choice(len(classes), size=n, p=weights)
    pick = rng.random(n)
    out = np.empty(n, dtype=np.int64)
    cls = new_class[0]
    for i in range(n):
        if i and u[i, 0] < repeat_prob:
            out[i] = out[i - 1]                           # a static shot: the same frame again
            continue
        if i and u[i, 1] < switch:
            cls = new_class[i]                            # a new scene
        pool = members[cls]
        out[i] = pool[int(pick[i] * len(pool))]
    return out
