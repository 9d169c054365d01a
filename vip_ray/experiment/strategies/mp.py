"""Model parallelism: the baseline model cut into consecutive slices over devices; every hop sends
the real activation tensor at the cut (sizes from the model's real layer shapes)."""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from vip_ray.aggregation import reply_bytes, softmax
from vip_ray.experiment.deployment import sim_device, sim_workload
from vip_ray.tables import responder_names, sample_rng
from vip_ray.experiment.strategies.base import Context, Replication, Strategy, register_strategy
from vip_ray.experiment.strategies.single import baseline_member
from vip_ray.placement.plan import mbps_at_start, reply_top_k, service_matrix
from vip_ray.pool.report import top_m
from vip_ray.scenario import ScenarioError
from vip_ray.scenario.load import data_shape, input_bytes
from vip_ray.sim import spec as S
from vip_ray.sim.chain import ChainSpec, run_chain


class MPOptions(BaseModel):
    """``model``: pool member to split (default: the pool's baseline); ``devices``: the chain, in
    order (default: the master, then the workers fastest first); ``on_failure``: ``fail`` (a
    failed or preempted-and-dropped hop ends the request) or ``stall`` (wait for the device,
    up to the deadline); ``dtype``: element type of the activations on the wire."""

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = None
    devices: Optional[list[str]] = Field(default=None, min_length=1)
    on_failure: Literal["fail", "stall"] = "fail"
    dtype: Literal["float32", "float16", "bfloat16", "int8"] = "float32"


def _s_per_byte(device) -> float:
    """Serialisation seconds per byte on the device's link at t = 0 (0 for the master)."""
    if device.role == "master":
        return 0.0
    return 8.0 / (mbps_at_start(device) * 1e6)


@register_strategy("mp")
class ModelParallel(Strategy):
    summary = "mp: the baseline cut into consecutive slices over devices; activations travel between them"
    Options = MPOptions

    def prepare(self, ctx: Context) -> None:
        from vip_ray.models import build_model
        from vip_ray.models.cuts import balanced_cuts, block_profile

        sc, file = ctx.scenario, ctx.file
        self.member = m = baseline_member(ctx, self.options.model, "strategy.options.mp.model")
        names = [d.name for d in sc.devices]
        if self.options.devices:
            bad = [n for n in self.options.devices if n not in names]
            if bad or len(set(self.options.devices)) != len(self.options.devices):
                raise ScenarioError(f"{file}: strategy.options.mp.devices: {bad or 'duplicates'}; each a distinct "
                                    f"device of {', '.join(names)}", file=file)
            chain = [names.index(n) for n in self.options.devices]
        else:
            workers = [i for i, d in enumerate(sc.devices) if d.role != "master"]
            master = [i for i, d in enumerate(sc.devices) if d.role == "master"]
            chain = master + sorted(workers, key=lambda i: -(sc.devices[i].speed(m.family) or 0.0))
        service = service_matrix(sc, [m])[:, 0]
        slow = [sc.devices[i].name for i in chain if not np.isfinite(service[i])]
        if slow:
            raise ScenarioError(f"{file}: strategy.options.mp.devices: {', '.join(slow)} cannot run {m.id!r}", file=file)
        shape = data_shape(ctx.pool)
        c, h, _ = shape if shape else (3, m.input_size, m.input_size)
        blocks = block_profile(build_model(m.model, **m.build), in_channels=c, image_size=h)
        chain = chain[:len(blocks)]
        speeds = [m.macs / service[i] for i in chain]  # the device's effective MAC/s on this model
        in_b = input_bytes(sc, ctx.pool)
        # seconds per byte into chain device j: up the previous holder's link, down its own
        per_byte = [0.0] + [_s_per_byte(sc.devices[a]) + _s_per_byte(sc.devices[b]) for a, b in zip(chain, chain[1:])]
        ends = balanced_cuts([b.macs for b in blocks], speeds,
                             cut_bytes=[b.out_bytes(self.options.dtype) for b in blocks], s_per_byte=per_byte)
        starts = [0] + ends[:-1]
        self.chain = chain
        self.slice_macs = [sum(b.macs for b in blocks[a:e]) for a, e in zip(starts, ends)]
        self.slice_s = [service[d] * mm / m.macs for d, mm in zip(chain, self.slice_macs)]
        self.stage_bytes = [in_b] + [blocks[e - 1].out_bytes(self.options.dtype) for e in ends[:-1]]
        self.slices = [f"{blocks[a].name}..{blocks[e - 1].name}" for a, e in zip(starts, ends)]
        self.out_bytes = reply_bytes(reply_top_k(sc), ctx.pool.num_classes)
        self.cut_table = pd.DataFrame({"after_block": [b.name for b in blocks[:-1]],
                                       "macs_before": np.cumsum([b.macs for b in blocks[:-1]]),
                                       "bytes": [b.out_bytes(self.options.dtype) for b in blocks[:-1]]})
        self.cut_table["ratio_to_input"] = self.cut_table["bytes"] / in_b
        self.probs = softmax(ctx.pool.logits([m.id]).astype(np.float64), axis=-1)[0]  # (N, C)

    def cuts(self) -> list[dict]:
        """The chosen cuts: what crosses the network after each slice but the last."""
        return [{"after": s, "bytes": b, "ratio_to_input": b / self.stage_bytes[0]}
                for s, b in zip(self.slices[:-1], self.stage_bytes[1:])]

    def replication(self, ctx, *, seed, replication, engine, chunk_requests):
        return Replication(self._run(ctx, seed, replication, chunk_requests))

    def _spec(self, ctx: Context, seed: int) -> tuple[ChainSpec, list[int]]:
        sc = ctx.scenario
        used = sorted(set(self.chain) | {i for i, d in enumerate(sc.devices) if d.role == "master"})
        pos = {d: j for j, d in enumerate(used)}
        slot_s = dict(zip(self.chain, self.slice_s))
        devices = tuple(sim_device(sc.devices[d], (S.VariantSlot(0.0, 0, slot_s[d]) if d in slot_s else S.UNPLACED_SLOT,),
                                   0) for d in used)
        master = next(pos[i] for i, d in enumerate(sc.devices) if d.role == "master")
        return ChainSpec(devices=devices, stages=tuple(pos[d] for d in self.chain),
                         stage_bytes=tuple(self.stage_bytes), out_bytes=self.out_bytes, master=master,
                         workload=sim_workload(sc, self.stage_bytes[0]), on_failure=self.options.on_failure,
                         seed=seed), used

    def _run(self, ctx, seed, replication, chunk_requests):
        sc = ctx.scenario
        spec, used = self._spec(ctx, seed)
        res = run_chain(spec)
        deadline = sc.workload.deadline_ms / 1e3
        labels = ctx.pool.labels
        r = res.n_requests
        samples = sample_rng(seed).integers(0, len(labels), size=r)
        in_time = res.finish <= res.arrival + deadline
        late = ~in_time & np.isfinite(res.finish) & (sc.workload.fallback == "best_effort")  # no local model to fall back on
        answered = in_time | late
        p = self.probs[samples]
        c = p.shape[1]
        m = min(top_m(c), c)
        top = np.argsort(-p, axis=1, kind="stable")[:, :m]
        label = labels[samples]
        pred = np.where(answered, top[:, 0], -1)
        latency = np.where(answered, res.finish - res.arrival, np.nan)
        chain_names = [sc.devices[d].name for d in self.chain]
        mask = np.zeros((r, len(chain_names)), dtype=bool)
        mask[answered] = True
        table = pd.DataFrame({
            "replication": np.full(r, replication, dtype=np.int32), "seed": np.full(r, seed, dtype=np.int64),
            "request_id": np.arange(r, dtype=np.int64), "arrival_s": res.arrival,
            "finish_s": np.where(answered, res.finish, np.nan), "latency_s": latency, "answered": answered,
            "deadline_met": in_time, "fallback": late, "n_responders": mask.sum(axis=1).astype(np.int16),
            "responders": responder_names(mask, chain_names), "sample": samples, "label": label,
            "prediction": pred, "correct_top1": answered & (pred == label),
            f"correct_top{m}": answered & (top == label[:, None]).any(axis=1),
            "bytes_down": res.bytes_down, "bytes_up": res.bytes_up, "strategy": self.name, "engine": "sim",
            "failed_device": pd.Categorical.from_codes(
                np.where(res.failed_device >= 0, res.failed_device, -1),
                categories=[sc.devices[d].name for d in used]),
        })
        for a in range(0, max(r, 1), chunk_requests):
            yield table.iloc[a:a + chunk_requests].reset_index(drop=True)
        span = max(res.t_end, 1e-12)
        stage_of = {d: j for j, d in enumerate(self.chain)}
        rows = []
        for j, d in enumerate(used):
            dev = sc.devices[d]
            st = {k: v[j] for k, v in res.device_stats.items()}
            s = stage_of.get(d)
            rows.append({"replication": replication, "device": dev.name, "group": dev.group, "role": dev.role,
                         "variant": f"{self.member.id}[{self.slices[s]}]" if s is not None else None,
                         "service_ms": 1e3 * self.slice_s[s] if s is not None else np.nan,
                         "macs_per_request": self.slice_macs[s] if s is not None else 0, **st,
                         "available_fraction": st["available_s"] / span, "utilization": st["busy_s"] / span})
        meta = {"placement": {sc.devices[d].name: [f"{self.member.id}[{sl}]", 0.0] for d, sl in zip(self.chain, self.slices)},
                "events": res.events, "engine_wall_s": res.wall_s, "cuts": self.cuts(),
                "cut_table": self.cut_table.to_dict(orient="records"), "engine": "chain (SimPy)"}
        return pd.DataFrame(rows), meta
