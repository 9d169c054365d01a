"""``learned``: a wait policy trained in the environment (:mod:`vip_ray.control.env`), as a policy.

The master waits for device ``d`` (among those it would wait for) when its learned wait
probability is at least ``threshold``. The probabilities are per device *name*, so a file trained
on one scenario applies to any scenario with those devices (a device it does not name is waited
for). Two ways to use one:

* ``control: {policy: learned, file: waits.json}`` — the JSON ``{"waits": {device: probability}}``
  that :func:`save_waits` writes;
* :func:`register_learned` ``(name, waits)`` — registers ``name`` itself (``@register_policy``),
  so ``control: {policy: NAME}`` picks it in this process (``vip-sim policies`` lists it).

The decision is the master's alone: it runs in the simulator and live (``live_waits``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vip_ray.control.base import Policy


class Learned(Policy):
    name = "learned"
    summary = "wait for the devices a policy trained in vip_ray.control.env learned to wait for (file: JSON)"
    #: device name -> learned wait probability (a registered learned policy sets it; else the file)
    waits_by_name: Mapping[str, float] | None = None

    def _mask(self, names: list[str]) -> np.ndarray:
        waits = self.waits_by_name
        if waits is None:
            waits = load_waits(self.options.file)
        return np.array([waits.get(n, 1.0) >= self.options.threshold for n in names], dtype=bool)

    def meta(self, world: Any) -> dict[str, Any]:
        # the deployment hands the policy its world here, once: the mask's device order is the world's
        self.mask = self._mask([d.name for d in world.devices])
        return super().meta(world)

    def waits(self, timing: Any, deadline_s: float, waits_for: np.ndarray) -> np.ndarray:
        return waits_for & self.mask[None, :]

    def live_waits(self, t: float, deadline_s: float, waits_for: np.ndarray) -> np.ndarray:
        return waits_for & self.mask


def save_waits(path: str | Path, waits: Mapping[str, float]) -> Path:
    path = Path(path)
    path.write_text(json.dumps({"waits": {k: float(v) for k, v in waits.items()}}, indent=1))
    return path


def load_waits(path: str | Path) -> dict[str, float]:
    data = json.loads(Path(path).read_text())
    return {str(k): float(v) for k, v in data["waits"].items()}


def register_learned(name: str, waits: Mapping[str, float], *, summary: str | None = None) -> type:
    """Register the learned wait probabilities ``waits`` (device name -> probability) as policy
    ``name`` (options: those of every policy, plus ``threshold``). Returns the policy class."""
    from vip_ray.control import POLICIES, register_policy

    if name in POLICIES.names() and not getattr(POLICIES.get(name), "learned", False):
        raise ValueError(f"policy {name!r} is already registered (a built-in); pick another name")
    # its options model (the built-in's, with no file) comes from vip_ray.scenario.schema.control
    cls = type(f"Learned_{name}", (Learned,), {
        "name": name, "learned": True, "waits_by_name": {str(k): float(v) for k, v in waits.items()},
        "summary": summary or f"learned waits ({', '.join(f'{k}: {v:.2f}' for k, v in waits.items())})"})
    return register_policy(name)(cls)
