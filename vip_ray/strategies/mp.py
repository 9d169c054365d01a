"""Model parallelism: the baseline model cut into consecutive slices over devices; every hop sends
the real activation tensor at the cut (sizes from the model's real layer shapes)."""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from vip_ray.core.aggregation import reply_bytes, softmax
from vip_ray.core.deployment import Chain
from vip_ray.core.tables import top_m
from vip_ray.core.world import UNPLACED_SLOT, SimSpec, VariantSlot
from vip_ray.placement.plan import mbps_at_start, reply_top_k, service_matrix
from vip_ray.scenario import ScenarioError
from vip_ray.scenario.load import baseline_member, data_shape, input_bytes
from vip_ray.scenario.world import device, workload
from vip_ray.strategies.base import Context, Strategy, register_strategy


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
    kind = "chain"
    engines = ("sim", "serve")
    summary = "mp: the baseline cut into consecutive slices over devices; activations travel between them"
    Options = MPOptions

    def prepare(self, ctx: Context) -> None:
        from vip_ray.models import build_model
        from vip_ray.models.cuts import balanced_cuts, block_profile

        sc, file = ctx.scenario, ctx.file
        self.member = m = baseline_member(ctx.pool, self.options.model, "strategy.options.mp.model", file=file)
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
        self.blocks = list(zip(starts, ends))
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

    def deploy(self, ctx: Context, seed: int) -> Chain:
        sc = ctx.scenario
        used = sorted(set(self.chain) | {i for i, d in enumerate(sc.devices) if d.role == "master"})
        pos = {d: j for j, d in enumerate(used)}
        slot_s = dict(zip(self.chain, self.slice_s))
        devices = tuple(device(sc.devices[d], (VariantSlot(0.0, 0, slot_s[d]) if d in slot_s else UNPLACED_SLOT,), 0)
                        for d in used)
        w = SimSpec(devices=devices, workload=workload(sc, self.stage_bytes[0]), seed=seed)
        return Chain(strategy=self.name, scenario=sc.name, seed=seed, pool=ctx.pool, top_m=top_m(ctx.pool.num_classes),
                     world=w, stages=tuple(pos[d] for d in self.chain), stage_bytes=tuple(self.stage_bytes),
                     out_bytes=self.out_bytes, on_failure=self.options.on_failure, probs=self.probs,
                     member=self.member.id, slices=tuple(self.slices), slice_macs=tuple(self.slice_macs),
                     blocks=tuple(self.blocks), wire_dtype=self.options.dtype,
                     meta={"cuts": self.cuts(), "cut_table": self.cut_table.to_dict(orient="records")})
