"""The master: an arrival process, and for each request a multicast to every device — one SimPy
process per (request, device) job that goes downlink → device → uplink. A multi-master world's
merged requests each go to the devices their own master reaches."""
from __future__ import annotations

import numpy as np

from ..result import Outcome


class Master:
    def __init__(self, env, spec, devices, links, medium, draws, gaps):
        self.env = env
        self.spec = spec
        self.devices = devices
        self.links = links
        self.medium = medium
        self.gaps = gaps
        R, D = len(gaps), len(devices)
        self.down_lost, self.mult, self.up_lost = draws  # per device: arrays over requests (or None)
        self.arrival = np.zeros(R)
        self.reply_at = np.full((R, D), np.inf)
        self.variant = np.full((R, D), -1, dtype=np.int32)
        self.outcome = np.zeros((R, D), dtype=np.int8)
        self.bytes_down = np.zeros(R, dtype=np.int64)
        self.bytes_up = np.zeros(R, dtype=np.int64)
        # each job's stage times (vip_ray.core.breakdown): input at the device, service start and
        # end, time paused by the owner's work
        self.ready_at = np.full((R, D), np.inf)
        self.start_at = np.full((R, D), np.inf)
        self.end_at = np.full((R, D), np.inf)
        self.paused_s = np.zeros((R, D))
        self.lost_down = [0] * D
        self.lost_up = [0] * D
        if spec.masters:   # multi-master: request i goes only to the devices its master reaches
            from vip_ray.core.world import merged_requests

            _, owner, reach = merged_requests(spec)
            self.sent = reach[owner]
            self.outcome[~self.sent] = Outcome.NOT_SENT
            self.pending = int(self.sent.sum())
        else:
            self.sent = None
            self.pending = R * D
        self.all_done = env.event()
        if self.pending == 0:
            self.all_done.succeed()
        self.deadline_s = spec.workload.deadline_s
        self.input_bytes = spec.workload.input_bytes

    def arrivals(self):
        env = self.env
        for i, g in enumerate(self.gaps):
            yield env.timeout(g)
            env.process(self.request(i))

    def request(self, i):
        env = self.env
        a = env.now
        self.arrival[i] = a
        deadline_at = a + self.deadline_s
        bcast = env.event() if self.medium is not None else None
        targets = range(len(self.devices)) if self.sent is None else np.flatnonzero(self.sent[i]).tolist()
        for d in targets:
            env.process(self.job(i, d, deadline_at, bcast))
        if bcast is not None:
            self.bytes_down[i] += self.input_bytes
            yield from self.medium.send(self.input_bytes, i)
            bcast.succeed()

    def _resolve(self):
        self.pending -= 1
        if self.pending == 0:
            self.all_done.succeed()

    def job(self, i, d, deadline_at, bcast):
        env = self.env
        link = self.links[d]
        dev = self.devices[d]
        if link is not None:
            if bcast is not None:
                yield bcast
            else:
                self.bytes_down[i] += self.input_bytes
                yield from link.down.send(self.input_bytes, i)
            if self.down_lost[d] is not None and self.down_lost[d][i]:
                self.outcome[i, d] = Outcome.LOST_DOWN
                self.lost_down[d] += 1
                self._resolve()
                return
            yield from link.propagate()
        self.ready_at[i, d] = env.now
        outcome, variant = yield from dev.serve(i, self.mult[d][i], deadline_at)
        self.variant[i, d] = variant
        self.start_at[i, d], self.paused_s[i, d] = dev.last_job
        if outcome == Outcome.REPLIED:
            self.end_at[i, d] = env.now
        if outcome == Outcome.REPLIED and link is not None:
            reply_bytes = dev.spec.reply_bytes
            self.bytes_up[i] += reply_bytes
            yield from link.up.send(reply_bytes, i)
            if self.up_lost[d] is not None and self.up_lost[d][i]:
                outcome = Outcome.LOST_UP
                self.lost_up[d] += 1
            else:
                yield from link.propagate()
        self.outcome[i, d] = outcome
        if outcome == Outcome.REPLIED:
            self.reply_at[i, d] = env.now
        self._resolve()
