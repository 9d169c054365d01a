"""The default pools of the main job, as training configs (``python -m vip_ray.tune`` overrides):

* ``default`` — VP's heterogeneous MobileNetV2 family (V1–V5 + the MobileNetV2 baseline) on
  MNIST-5k. A reference copy ships with the package (``vip_ray/pool/reference_pools/default``),
  so every machine simulates on the same bank; ``vip-sim pools default --retrain`` trains one here.
* ``default-cp`` — class parallelism (sensAI) on the same data, split and seed: five class
  groups chosen by confusability, one VP V3 group model each (trained on first use).

Opening them — and training them when missing — is the experiment layer's business
(:mod:`vip_ray.experiment.pools`); this module only names them, so the pool layer imports
nothing from training.
"""
from __future__ import annotations

DEFAULT_POOL = "default"
DEFAULT_OVERRIDES = (
    f"pool.name={DEFAULT_POOL}", "data=mnist5k", "family=vp", "shape=heterogeneous", "diversity=none",
    "train.mode=per_variant", "resources.cpu=1",
)
DEFAULT_CP_POOL = "default-cp"
DEFAULT_CP_OVERRIDES = (  # same data, split and seed as DEFAULT_OVERRIDES; the baseline lives in `default`
    f"pool.name={DEFAULT_CP_POOL}", "data=mnist5k", "family=vp", "family.baselines=[]", "shape=class_parallel",
    "shape.groups=5", "shape.grouping=confusability", "diversity=none", "train.mode=per_variant", "resources.cpu=1",
)
