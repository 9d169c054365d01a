"""A Gymnasium-style environment over the simulator: learn when the master waits for whom.

``ControlEnv(scenario_file, overrides=(), interval_s=10, latency_weight=0.5, energy_weight=0)``: an episode is one
replication of the scenario (its strategy, pool and seeds; ``reset(seed=...)`` picks the seed),
cut into decision epochs of ``interval_s``. Each step:

* action — ``(D,)`` of 0/1: the devices the master waits for during the next epoch (among those
  it would wait for: placed, not known down); the replies that arrive in time are used anyway;
* observation — ``(D, 3)`` float32 in [0, 1] from the last epoch, what a master sees per device:
  the fraction of its replies in time, of its timeouts, and its mean latency / deadline (a
  timeout counts the deadline);
* reward — over the epoch's requests: accuracy within the deadline − ``latency_weight`` × mean
  latency / deadline − ``energy_weight`` × mean energy per request / ``energy_norm_j``. A request's
  energy is ``requests.parquet``'s ``energy_j`` (:func:`vip_ray.core.energy.request_energy`: the
  compute time of the jobs whose replies it used + its bytes at both ends of the links); the
  normaliser defaults to :func:`reference_energy_j`, the energy of a request that every device
  answers (so the term is about 1 when the master uses every reply). ``energy_weight`` > 0 needs
  an energy model (devices' ``power``, links' ``radio``).

The waiting decision is the master's alone (it changes no device timeline), so the replication is
simulated once per episode and each step tables one epoch with :mod:`vip_ray.core.master`.

``reset`` / ``step`` follow Gymnasium's API (``(obs, info)`` and ``(obs, reward, terminated,
truncated, info)``); when the ``gymnasium`` package is installed the class is a
``gymnasium.Env`` with ``Box`` / ``MultiBinary`` spaces (and passes its environment checker),
otherwise it runs alone with the same methods — vip_ray does not depend on it.
:func:`train_wait_policy` is a worked example: the cross-entropy method over per-device wait
probabilities (no deep-learning library needed at this size); :func:`train_and_register` trains
one and registers it (:mod:`vip_ray.control.learned`), so that ``control: {policy: NAME}`` runs
it in the simulator and live::

    env = ControlEnv("scenarios/smart_home.yaml", ["workload.requests=2000"])
    train_and_register(env, "smart_home_waits", path="smart_home_waits.json")
    # then: vip-sim run scenarios/smart_home.yaml --set control.policy=smart_home_waits  (this process)
    #   or: --set control.policy=learned --set control.file=smart_home_waits.json   (any process)
"""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

try:  # optional: the real Env base class and spaces when Gymnasium is installed
    import gymnasium as _gym
    from gymnasium import spaces as _spaces
    _Base: Any = _gym.Env
except ImportError:   # pragma: no cover - exercised where gymnasium is absent
    _gym = _spaces = None
    _Base = object


class _MaskWaits:
    """A controller that applies the step's action to the master's wait set."""

    def __init__(self, mask: np.ndarray):
        self.mask = np.asarray(mask, dtype=bool)

    def plan_world(self, dep, run):
        return dep

    def waits(self, timing, deadline_s, waits_for):
        return waits_for & self.mask[None, :]

    def answer(self, timing, deadline_s, finish, responded, waits_for, probs, samples):
        return finish, responded & (timing.reply_at <= finish[:, None])


class ControlEnv(_Base):
    metadata = {"render_modes": []}

    def __init__(self, scenario_file: str = "scenarios/smart_home.yaml", overrides: Sequence[str] = (),
                 interval_s: float = 10.0, latency_weight: float = 0.5, energy_weight: float = 0.0,
                 energy_norm_j: float | None = None):
        from vip_ray.core.energy import has_energy

        from vip_ray.experiment.run import checked_strategy, context, open_pool
        from vip_ray.scenario import load_scenario

        self.scenario = load_scenario(scenario_file, list(overrides))
        engine = self.scenario.sim_engine
        self.strategy = checked_strategy(self.scenario, scenario_file, engine)
        self.pool = open_pool(self.scenario, lambda s: None)
        self.ctx = context(self.scenario, self.pool, file=scenario_file, log=lambda s: None)
        self.strategy.prepare(self.ctx)
        self.engine = engine
        self.interval_s = float(interval_s)
        self.latency_weight = float(latency_weight)
        self.energy_weight = float(energy_weight)
        if not (np.isfinite(self.energy_weight) and self.energy_weight >= 0):
            raise ValueError(f"energy_weight: must be a finite number >= 0, got {energy_weight!r}")
        self.energy_norm_j = None
        if self.energy_weight > 0:
            world = self.strategy.deploy(self.ctx, self.scenario.seeds.base).world
            if not has_energy(world):
                raise ValueError(f"energy_weight: {scenario_file} has no energy model (no device power, no link "
                                 f"radio); give one, or energy_weight 0")
            self.energy_norm_j = float(energy_norm_j) if energy_norm_j is not None else reference_energy_j(world)
            if not (np.isfinite(self.energy_norm_j) and self.energy_norm_j > 0):
                raise ValueError(f"energy_norm_j: must be a finite number > 0 (J), got {self.energy_norm_j!r}")
        self.n_devices = len(self.scenario.devices)
        if _spaces is not None:
            self.observation_space = _spaces.Box(0.0, 1.0, shape=(self.n_devices, 3), dtype=np.float32)
            self.action_space = _spaces.MultiBinary(self.n_devices)
        self._dep = self._res = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        from vip_ray.core.tables import sample_rng
        from vip_ray.sim.engine import run

        if _Base is not object:
            super().reset(seed=seed)
        seed = self.scenario.seeds.base if seed is None else int(seed)
        self._dep = self.strategy.deploy(self.ctx, seed)
        self._res = run(self._dep.world, self.engine)
        self._samples = sample_rng(self._dep.seed)
        if self.energy_weight > 0:
            from vip_ray.core.energy import EnergyMeter

            self._meter = EnergyMeter(self._dep.world)
        self._t = 0.0
        self._end = float(self._res.arrival[-1]) if len(self._res.arrival) else 0.0
        return np.zeros((self.n_devices, 3), dtype=np.float32), {"seed": seed}

    def step(self, action):
        from vip_ray.core.master import request_table

        if self._res is None:
            raise RuntimeError("call reset() before step()")
        res, t0 = self._res, self._t
        t1 = t0 + self.interval_s
        rows = np.flatnonzero((res.arrival >= t0) & (res.arrival < t1))
        timing = SimpleNamespace(arrival=res.arrival[rows], reply_at=res.reply_at[rows], variant=res.variant[rows],
                                 outcome=res.outcome[rows], bytes_down=res.bytes_down[rows],
                                 bytes_up=res.bytes_up[rows], request_id=res.request_id[rows],
                                 # each job's stage times: a request's energy is its jobs' own compute
                                 **{k: getattr(res, k)[rows] for k in ("ready_at", "start_at", "end_at", "paused_s")
                                    if getattr(res, k, None) is not None})
        dep = replace(self._dep, control=_MaskWaits(np.asarray(action).reshape(-1).astype(bool)))
        table = request_table(timing, dep, replication=0, sample_rng=self._samples)
        deadline = dep.workload.deadline_s
        if len(rows):
            ok = (table["correct_top1"] & table["deadline_met"]).to_numpy()
            lat = np.nan_to_num(table["latency_s"].to_numpy(), nan=deadline)
            reward = float(ok.mean() - self.latency_weight * np.minimum(lat, deadline).mean() / deadline)
            if self.energy_weight > 0:
                energy = float(self._meter.annotate(table)["energy_j"].mean())
                reward -= self.energy_weight * energy / self.energy_norm_j
                info_energy = {"energy_j": energy}
            due = timing.arrival + deadline
            in_time = timing.reply_at <= due[:, None]
            obs = np.stack([in_time.mean(axis=0), (~in_time).mean(axis=0),
                            np.minimum(timing.reply_at - timing.arrival[:, None], deadline).mean(axis=0) / deadline],
                           axis=1)
        else:
            reward, obs = 0.0, np.zeros((self.n_devices, 3))
        self._t = t1
        terminated = t1 > self._end
        info = {"requests": int(len(rows))}
        if self.energy_weight > 0 and len(rows):
            info.update(info_energy)     # the epoch's mean energy per request (J)
        return obs.astype(np.float32), reward, terminated, False, info


def reference_energy_j(world: Any) -> float:
    """The energy of one request that every device answers (J), the default normaliser of the
    reward's energy term: each placed device's compute for one job (its first slot's mean service
    time at busy power) + one input and one reply on every link, at the world's mean J/bit (as
    :class:`vip_ray.core.energy.EnergyMeter` prices a request's bytes)."""
    from vip_ray.core.energy import EnergyMeter

    meter = EnergyMeter(world)
    bits = 8.0 * sum(world.workload.input_bytes + d.reply_bytes for d in world.devices if d.link is not None)
    return float(sum(meter.job_j.values()) + bits * meter.j_per_bit)


def rollout(env: ControlEnv, probs: np.ndarray, rng: np.random.Generator, seed: int) -> float:
    """One episode's total reward with each device waited for with probability ``probs`` per step."""
    env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        _, r, done, _, _ = env.step((rng.random(len(probs)) < probs).astype(np.int8))
        total += r
    return total


def train_wait_policy(env: ControlEnv, *, iterations: int = 5, population: int = 8, elite: int = 2,
                      seed: int = 0) -> np.ndarray:
    """The worked example: the cross-entropy method over per-device wait probabilities (start 0.5;
    each iteration keeps the mean of the ``elite`` best of ``population`` samples). Returns the
    learned probabilities (D,)."""
    rng = np.random.default_rng(seed)
    mean = np.full(env.n_devices, 0.5)
    for _ in range(iterations):
        cand = np.clip(mean + 0.25 * rng.standard_normal((population, env.n_devices)), 0.0, 1.0)
        scores = np.array([rollout(env, c, rng, env.scenario.seeds.base) for c in cand])
        mean = cand[np.argsort(-scores)[:elite]].mean(axis=0)
    return mean


def train_and_register(env: ControlEnv, name: str, *, path: str | None = None, **train) -> dict[str, float]:
    """The worked example end to end: train (:func:`train_wait_policy`, ``train`` its options),
    register the learned wait probabilities as policy ``name`` and, with ``path``, save them for
    ``control: {policy: learned, file: PATH}``. Returns them by device name."""
    from vip_ray.control.learned import register_learned, save_waits

    probs = train_wait_policy(env, **train)
    waits = {dev.name: float(p) for dev, p in zip(env.scenario.devices, probs)}
    register_learned(name, waits)
    if path is not None:
        save_waits(path, waits)
    return waits
