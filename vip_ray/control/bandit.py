"""``bandit``: UCB1 over the variants of each worker, in epochs of ``interval_s``.

At the end of each epoch the master scores what each worker's variant gave it during the epoch —
``accuracy(variant) × (replies in time / requests it was sent) − latency_weight × mean reply
latency / deadline`` (a timeout counts the deadline) — from master-visible facts only (its pool's
accuracies are known offline), and picks for the next epoch the variant with the highest
``mean + exploration · sqrt(2 ln n / n_v)`` (an untried variant that fits the deadline first).
A change is a re-deployment: the weights' transfer over the worker's link plus ``load_s`` with no
variant on its timeline (:func:`vip_ray.control.base.with_variant`). The kernel is re-run from
the start after each epoch that changes something (its timelines are causal).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from vip_ray.control.base import Policy, with_variant

#: at most this many epochs with a change are re-simulated per replication
MAX_EPOCHS = 200


class Bandit(Policy):
    name = "bandit"
    summary = "UCB1 over each worker's variants, per epoch: accuracy x replies in time - latency (re-deploys)"
    engines = ("sim",)   # its re-deployments are simulated (the live engine does not move weights)

    def plan_world(self, dep: Any, run: Any) -> Any:
        o = self.options
        world = dep.world
        deadline = world.workload.deadline_s
        service = np.asarray(self.service_s)
        acc = np.array([float(getattr(v, "accuracy", 0.0) or 0.0) for v in dep.variants])
        workers = [d for d, dev in enumerate(world.devices) if dev.role == "worker" and dev.slot_at(0.0) is not None]
        arms = {d: [v for v in range(len(acc)) if service[d, v] <= deadline] for d in workers}
        total = {d: np.zeros(len(acc)) for d in workers}
        count = {d: np.zeros(len(acc)) for d in workers}
        res = run(world)
        moves: list[dict] = []
        end = float(res.arrival[-1]) if len(res.arrival) else 0.0
        t0, reruns = 0.0, 0
        while t0 + o.interval_s <= end and reruns < MAX_EPOCHS:
            t1 = t0 + o.interval_s
            win = (res.arrival >= t0) & (res.arrival < t1)
            changed = False
            for d in workers:
                cur = world.devices[d].slot_at(t1 - 1e-12)
                if cur is None or not win.any():
                    continue
                v = cur[0]
                lat = np.minimum(res.reply_at[win, d] - res.arrival[win], deadline)
                in_time = np.mean(res.reply_at[win, d] <= res.arrival[win] + deadline)
                total[d][v] += acc[v] * in_time - o.latency_weight * float(np.mean(lat)) / deadline
                count[d][v] += 1
                n = count[d].sum()
                ucb = np.full(len(acc), -np.inf)
                for a in arms[d]:
                    ucb[a] = np.inf if count[d][a] == 0 else \
                        total[d][a] / count[d][a] + o.exploration * np.sqrt(2 * np.log(n) / count[d][a])
                best = int(np.argmax(ucb))
                if arms[d] and best != v and ucb[best] > ucb[v]:
                    world, cost = with_variant(world, d, t1, best, float(service[d, best]),
                                               8 * int(dep.variants[best].bytes), o.load_s)
                    moves.append({"at_s": t1, "device": world.devices[d].name, "variant": dep.variants[best].id,
                                  "cost_s": cost})
                    changed = True
            if changed:
                res = run(world)
                reruns += 1
            t0 = t1
        self.moves = moves
        meta = {**dep.meta, **self.meta(world)}
        if moves:
            meta["redeployment_log"] = moves
        return replace(dep, world=world, meta=meta)
