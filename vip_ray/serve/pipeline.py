"""The end–cloud strategies live: a :class:`vip_ray.core.deployment.Pipeline` as an end-device
deployment and a cloud deployment on Ray Serve (COACH, Neurosurgeon, DADS, SPINN, JPS).

The end device (:class:`EndStage`, also where the scenario's inputs originate) really runs the
member's input adapter and its layers up to the cut (``SplitRunner.end``), takes the planner's
per-task decision at the emulated instant the last crossing tensor is ready — COACH's
semantic-cache exit and bit width, SPINN's exit head, or a fixed fp32 plan, with the very
``decide`` the simulator calls — really quantizes each crossing tensor to its planned width
(:mod:`vip_ray.core.quant`: integer codes plus scale and zero point on the wire) and calls the
cloud (:class:`CloudStage`), which dequantizes them and really runs the tail (``SplitRunner.cloud``).

Timing is emulated as in the simulator (:mod:`vip_ray.sim.pipeline`): FIFO end device and cloud,
an uplink and a downlink (:mod:`vip_ray.core.netmodel`; a lost transmission is sent again), the
layer times of the setup's cost model; the link is priced at the plan's message bytes (the
tensors at the profiled input size, as the planner chose the cut and bits for). Answers are the
real outputs: the cloud's logits, the end's own on a local plan, the exit's answer on an exit.
Tables: :mod:`vip_ray.core.endcloud`, as the simulator's.
"""
from __future__ import annotations

import asyncio
import bisect
import time
import uuid
from typing import Any, NamedTuple

import numpy as np

from vip_ray.core import endcloud
from vip_ray.core.deployment import Pipeline
from vip_ray.core.tables import ranked
from vip_ray.serve.config import ServeOptions, _safe
from vip_ray.serve.emulated import Clock

RECORDS = ("arrival_s", "end_start_s", "end_done_s", "tx_start_s", "tx_done_s", "cloud_start_s", "cloud_done_s",
           "finish_s", "t_end_s", "t_tx_s", "t_cloud_s", "wait_tx_s", "wait_cloud_s", "measured_s")


class _Fate(NamedTuple):
    """A task's fate when no decision is asked (a local plan): the planners' ``Decision`` shape."""

    exit: bool
    bits: int


def encode(t: Any, bits: int, layer: int) -> tuple:
    """One crossing tensor as it goes on the wire: the raw frame as it is, fp32 as it is, else
    UAQ integer codes (uint8 up to 8 bits, uint16 above) with the per-tensor scale and zero point."""
    from vip_ray.core.quant import FP32, quantize

    if layer == 0 or bits == FP32:
        return ("f32", t.numpy())
    q, scale, zp = quantize(t, bits)
    codes = q.numpy().astype(np.uint8 if bits <= 8 else np.uint16)
    return ("q", codes, scale.numpy(), zp.numpy())


def decode(msg: tuple) -> Any:
    import torch

    from vip_ray.core.quant import dequantize

    if msg[0] == "f32":
        return torch.from_numpy(msg[1])
    _, codes, scale, zp = msg
    return dequantize(torch.from_numpy(codes.astype(np.float32)), torch.from_numpy(scale), torch.from_numpy(zp))


class CloudStage:
    """The cloud: FIFO over the task segments on the emulated timeline, the real tail, the
    answer back down the link."""

    def __init__(self, runner: Any, link: Any, result_bytes: int):
        import torch

        torch.set_num_threads(1)
        self.runner, self.link, self.result_bytes = runner, link, result_bytes
        self.token: str | None = None

    def _sync(self, token: str, seed: int, epoch: float) -> None:
        if token != self.token:
            self.clock = Clock(epoch, asyncio.get_running_loop())
            self.free = 0.0
            self.down = self.link.direction()
            self.rng = np.random.default_rng([seed, 8])
            self.token = token
            self.busy = {"cloud": 0.0, "downlink": 0.0}

    def _tail(self, cut: Any, msgs: list) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.runner.cloud(cut, [decode(m) for m in msgs])[0].float().numpy()

    async def run(self, token: str, seed: int, epoch: float, cut: Any, msgs: list, arrive: list,
                  cloud_s: list) -> dict:
        """Message ``k`` reached the cloud at emulated ``arrive[k]``; segment ``k`` takes ``cloud_s[k]``."""
        self._sync(token, seed, epoch)
        t, wait, spent, start0 = -np.inf, 0.0, 0.0, None
        for a, s in zip(arrive, cloud_s):
            ready = max(a, t)
            start = max(ready, self.free)
            wait += start - ready
            start0 = start if start0 is None else start0
            t = start + s
            self.free = t
            spent += s
        self.busy["cloud"] += spent
        logits = await asyncio.get_running_loop().run_in_executor(None, self._tail, cut, msgs)
        ready = t
        while True:                       # the answer down the link (sent again after a loss)
            s = max(ready, self.down.free)
            end, arrived = self.down.send(ready, self.result_bytes)
            self.busy["downlink"] += end - s
            if not (self.link.loss and self.rng.random() < self.link.loss):
                break
            ready = end
        wait_s = arrived - self.clock.now()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        return {"logits": logits, "cloud_start_s": start0, "cloud_done_s": t, "t_cloud_s": spent,
                "wait_cloud_s": wait, "finish_s": arrived, "busy_cloud": self.busy["cloud"]}


class EndStage:
    """The end device and the master of the pipeline (see the module docstring)."""

    def __init__(self, setup: Any, planned: Any, cloud: Any):
        import torch

        torch.set_num_threads(1)
        self.st, self.planned, self.cloud = setup, planned, cloud
        self.adapter = setup.pool.build_model(setup.model.member.id).adapter.eval()
        self.runner = setup.model.runner
        self.times, self.rates = setup.link.steps()
        self.issued: dict[str, int] = {}

    def _head(self, cut: Any, image: np.ndarray) -> list:
        import torch

        with torch.inference_mode():
            x = self.adapter(torch.from_numpy(image)[None].float() / 255.0)   # as EndCloudModel prepares frames
            return self.runner.end(cut, x)

    def _bandwidth(self, t: float) -> float:
        return self.rates[bisect.bisect_right(self.times, t) - 1]

    async def replay(self, token: str, seed: int, epoch: float, times: np.ndarray, images: np.ndarray,
                     which: np.ndarray, samples: np.ndarray) -> dict:
        from vip_ray.core.quant import FP32
        from vip_ray.serve.loadgen import send_on_schedule

        st, planned = self.st, self.planned
        loop = asyncio.get_running_loop()
        clock = Clock(epoch, loop)
        decide, answer, *fed_back = planned.decide_factory(samples)
        answered = fed_back[0] if fed_back else None
        n = len(times)
        rec = {c: np.full(n, np.nan) for c in RECORDS}
        for c in ("bytes_up", "bytes_down", "bits", "qbits"):
            rec[c] = np.zeros(n, dtype=np.int64)
        rec["early_exit"] = np.zeros(n, dtype=bool)
        plans: list = [None] * n
        logits: list = [None] * n
        up = st.link.direction()
        rng = np.random.default_rng([seed, 7])
        busy = {"end": 0.0, "link": 0.0, "cloud": 0.0}
        state = {"end_free": 0.0}
        lock = asyncio.Lock()        # FIFO: the end device takes tasks (and decides) in arrival order
        self.issued[token] = 0

        async def until(v: float) -> None:
            if v - clock.now() > 0:
                await asyncio.sleep(v - clock.now())

        def transmit(i: int, ready: float, nbytes: int) -> float:
            while True:
                s = max(ready, up.free)
                rec["wait_tx_s"][i] += s - ready
                if np.isnan(rec["tx_start_s"][i]):
                    rec["tx_start_s"][i] = s
                end, arrived = up.send(ready, nbytes)
                rec["t_tx_s"][i] += end - s
                busy["link"] += end - s
                if not (st.link.loss and rng.random() < st.link.loss):
                    return arrived
                ready = end

        async def task(i: int) -> None:
            t_a = float(times[i])
            rec["arrival_s"][i] = t_a
            rec["t_tx_s"][i] = rec["wait_tx_s"][i] = rec["wait_cloud_s"][i] = 0.0
            async with lock:
                start = max(t_a, state["end_free"])
                p = planned.plan_for(i, start, self._bandwidth(start)) if planned.plan_for else planned.plan
                plans[i] = p
                head = loop.run_in_executor(None, self._head, p.cut, images[which[i]])
                n_msgs = len(p.msg_layers)
                sends, held = [], []
                decision = _Fate(False, 0)
                t = start
                for k in range(n_msgs):
                    t += p.end_s[k]
                    if k < n_msgs - 1:
                        if planned.hold:      # sent only once the decision says the task goes on
                            held.append(k)
                        else:
                            sends.append((k, planned.early_bits, t))
                        continue
                    await until(t)            # the decision falls at its emulated instant, in task order
                    decision = decide(i, t, self._bandwidth(t), p)
                    if decision.exit:
                        break
                    sends += [(j, planned.early_bits, t) for j in held]
                    sends.append((k, decision.bits, t))
                if n_msgs == 0:
                    decision = _Fate(False, FP32)
                if not decision.exit:
                    t += p.end_s[-1]
                state["end_free"] = t
                busy["end"] += t - start
                rec["end_start_s"][i], rec["end_done_s"][i], rec["t_end_s"][i] = start, t, t - start
                arrive = []
                for k, bits, ready in sends:
                    rec["bytes_up"][i] += p.msg_bytes(bits)[k]
                    arrive.append(transmit(i, ready, p.msg_bytes(bits)[k]))
            tensors = await head
            rec["early_exit"][i] = decision.exit
            rec["bits"][i] = 0 if decision.exit else p.bits_label(decision.bits)
            rec["qbits"][i] = decision.bits
            if decision.exit or n_msgs == 0:
                rec["finish_s"][i] = t
                rec["t_cloud_s"][i] = 0.0
                if n_msgs == 0:
                    logits[i] = tensors[0][0].float().numpy()
                await until(t)
            else:
                order = [k for k, _, _ in sends]
                by_layer = dict(zip(p.cut.tensors, tensors))
                msgs = [encode(by_layer[p.msg_layers[k]], bits, p.msg_layers[k]) for k, bits, _ in sends]
                arr = [arrive[order.index(k)] for k in range(n_msgs)]
                msgs = [msgs[order.index(k)] for k in range(n_msgs)]
                res = await self.cloud.run.remote(token, seed, epoch, p.cut, msgs, arr, list(p.cloud_s))
                logits[i] = res["logits"]
                rec["tx_done_s"][i] = arr[-1]
                for c in ("cloud_start_s", "cloud_done_s", "t_cloud_s", "wait_cloud_s", "finish_s"):
                    rec[c][i] = res[c]
                busy["cloud"] = max(busy["cloud"], res["busy_cloud"])
                rec["bytes_down"][i] = st.result_bytes
                if answered is not None:   # at the emulated instant the answer is back (COACH's cache update)
                    answered(i, rec["finish_s"][i], p, decision)
            rec["measured_s"][i] = time.time() - epoch
            self.issued[token] += 1

        _, lags = await send_on_schedule(times, epoch, task)
        # the exits' answers as the planner recorded them (no cloud lookups: every other answer is live)
        exits = dict(rec, early_exit=np.ones(n, dtype=bool))
        out = answer(exits, plans)
        return {"records": rec, "exit_pred": out.pred, "exit_hit": out.topm_hit, "logits": logits,
                "partition": [p.cut.where if p is not None else "" for p in plans], "busy": busy,
                "send_lag_s": lags}

    async def progress(self, token: str) -> int:
        return self.issued.get(token, 0)


class PipelineRun:
    """The Serve engine's runner for a :class:`Pipeline` (see :mod:`vip_ray.serve.staged`)."""

    def __init__(self, dep: Pipeline, options: ServeOptions, *, images: np.ndarray, local_testing: bool = False,
                 log=print):
        self.dep, self.options, self.local_testing, self.log = dep, options, local_testing, log
        self.images = images                   # the pool's test images, in bank order
        self.app = f"vip-{_safe(dep.scenario)}-{dep.strategy}"

    def same(self, dep: Any) -> bool:
        return (type(dep) is Pipeline and dep.strategy == self.dep.strategy and dep.setup is self.dep.setup
                and dep.planned is self.dep.planned)

    def start(self) -> PipelineRun:
        from ray import serve

        from vip_ray.serve.app import MAX_ONGOING, LiveApp

        st = self.dep.setup
        opts = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}, "max_ongoing_requests": MAX_ONGOING,
                "graceful_shutdown_timeout_s": 1.0}
        cloud = serve.deployment(CloudStage, name=f"cloud-{_safe(st.cloud_name)}", **opts).bind(
            st.model.runner, st.link, st.result_bytes)
        end = serve.deployment(EndStage, name=f"end-{_safe(st.end_name)}", **opts).bind(st, self.dep.planned, cloud)
        self.live = LiveApp(end, self.app, self.options, local_testing=self.local_testing).start()
        self.log(f"[vip_ray] Serve app {self.app!r}: {st.model.member.id} split at "
                 f"{self.dep.planned.plan.cut.where} between {st.end_name} and {st.cloud_name}")
        return self

    def stop(self) -> None:
        self.live.stop()

    def replicate(self, dep: Pipeline, replication: int) -> dict:
        import pandas as pd

        st = dep.setup
        times, samples = dep.arrivals, dep.samples        # the simulator's tasks and frames for the seed
        used, which = np.unique(samples, return_inverse=True)
        token = f"rep-{dep.seed}-{uuid.uuid4().hex[:8]}"
        t0 = time.time()
        epoch = t0 + 1.0
        limit = float(times[-1] if len(times) else 0.0) + 60.0 + 10 * st.deadline_s   # a stuck replica fails the run
        got = self.live.handle.replay.remote(token, dep.seed, epoch, times, np.ascontiguousarray(self.images[used]),
                                             which.ravel(), samples).result(timeout_s=limit)
        rec = got["records"]
        n = len(times)
        labels = st.pool.labels[samples]
        pred, hit = np.array(got["exit_pred"], dtype=np.int64), np.array(got["exit_hit"], dtype=bool)
        live = [i for i in range(n) if got["logits"][i] is not None]
        if live:
            top = ranked(np.stack([got["logits"][i] for i in live]), dep.top_m)
            pred[live] = top[:, 0]
            hit[live] = (top == labels[live, None]).any(axis=1)
        emulated = rec["finish_s"].copy()
        measured = rec["measured_s"]
        # latency and the deadline on the measured finish; emulated_latency_s on the emulated one
        table = endcloud.request_table(st, dict(rec, finish_s=np.maximum(measured, emulated),
                                                emulated_finish_s=emulated),
                                       pred, hit, got["partition"], samples, strategy=dep.strategy,
                                       seed=dep.seed, replication=replication, topm=dep.top_m, engine="serve")
        devices = endcloud.device_table(st, dep.planned, dict(rec), got["busy"], replication)
        timing = pd.DataFrame({"replication": np.full(n, replication, dtype=np.int32), "request_id": np.arange(n),
                               "arrival_s": rec["arrival_s"], "send_lag_s": got["send_lag_s"],
                               "emulated_finish_s": emulated, "finish_s": measured, "overhead_s": measured - emulated})
        meta = {"placement": endcloud.placement(st), **dep.meta}
        extra = {"seed": dep.seed, "wall_s": round(time.time() - t0, 3), "overhead_s": measured - emulated,
                 "send_lag_s": np.asarray(got["send_lag_s"])}
        return {"requests": table, "devices": devices, "meta": meta, "tables": {"serve_timing": timing},
                "extra": extra}
