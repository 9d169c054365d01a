"""Energy: the power model of a device and of its radio, what a replication's devices and requests
used, and when a battery runs out. Engine-neutral: every figure is computed after the engine ran,
from the device table's counters (``busy_s``, ``available_s``, ``jobs``, ``served``,
``lost_down``) and the request table's bytes and responders, which the simulator and the Serve
engine both write.

The model (the README's "Energy" section says the same):

* **Device** (``power: {idle_w, busy_w}``): a device busy ``B`` s and available ``T`` s uses
  ``B * busy_w`` (``energy_compute_j``) + ``(T - B) * idle_w`` (``energy_idle_j``) joules. Time the
  device is down (owner's work, a crash, an empty battery) is not counted: it is not ours.
* **Radio** (a link's ``radio``): each bit costs ``tx_nj_per_bit`` / ``rx_nj_per_bit`` nJ, or, given
  as power, ``tx_w / bandwidth`` / ``rx_w / bandwidth`` J (the radio is on for bits / bandwidth s).
  A worker receives its inputs (those lost on the way too: the radio listened) and transmits its
  replies; the master is the other end of every link (same technology, same costs). On a shared
  medium (Wi-Fi multicast: one transmission of each input serves every networked device) the
  master transmits each input once, at the medium's rate (the slowest networked link's
  bandwidth) and the costliest of the networked radios (:func:`multicast_tx_j_per_bit`), and each
  worker still receives it. An optional
  tail state (LTE's RRC tail, Huang et al., MobiSys 2012) keeps the radio at ``tail_w`` for
  ``tail_s`` after each transfer, cut short by the next one: per input ``tail_w * min(gap, tail_s)``
  with ``gap`` the time to the next request's input (the reply falls inside the same active period
  when the latency is shorter than the tail — the model's simplification).
* **Per request** ``energy_j``: the work done for it — each job whose reply it used, for the
  compute time that job actually took (its end less its start less its time paused, the engine's
  stage times: ``jobs.parquet``'s ``end_s - start_s - paused_s``), at that device's ``busy_w``
  (``devices.parquet``'s split: ``energy_compute_j`` is the busy time at ``busy_w``, idle power
  is ``energy_idle_j`` and no request's), the master's own job included — plus its bits on the
  wire at both ends of each link they crossed (every input sent, every reply sent, at that link's
  tx + rx J/bit). Work nobody used (late replies, dropped jobs), the radio tail and idle power
  belong to no request: they are in the device totals, and ``summary.json``'s
  ``energy_per_request_j`` / ``energy_per_correct_j`` divide *all* devices' energy by the requests /
  the correct (top-1) answers. Vectorised over the (R, D) job arrays after the event loop
  (:func:`request_energy`). A chain (mp), in both engines: an answered request's slices for the
  time each computed, and its bytes on every link it crossed (:func:`chain_energy`; the Serve
  engine's stages tally them hop by hop on the emulated timeline). Rows that come without their own
  ``energy_j`` fall back on each used device's mean service time and the links' mean J/bit.
* **End–cloud pipelines** (:class:`PipelineMeter`): the end device computes each task's head for
  ``t_end_s`` at its ``busy_w``, the cloud its tail for ``t_cloud_s`` at its own (none without a
  power block: a cloud GPU of the catalog reports none), and both ends of the end–cloud link pay
  the tensors sent up and the answer sent down at its radio's J/bit; idle power over the run's span
  and the tail as for a fan-out.
* **Battery** (``battery_wh``): the device goes down for good (a crash) when its battery is empty,
  at ``battery_wh * 3600 / P_mean``, ``P_mean`` the device's expected mean power under the
  workload: ``idle_w + rho * (busy_w - idle_w)`` with ``rho = min(1, rate * service_s)``, plus its
  radio's mean power (``rate`` inputs and replies per second at the J/bit costs, and the tail's
  ``tail_w * (1 - exp(-rate * tail_s))`` for Poisson arrivals). Computed before the run, so both
  engines see the same crash and the availability timeline shows it.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from vip_ray.core.power import PowerSpec, RadioSpec  # noqa: F401  (re-exported)
from vip_ray.core.world import Availability

#: energy columns appended to ``devices.parquet`` (after the existing ones)
DEVICE_ENERGY_COLUMNS = ("energy_compute_j", "energy_radio_j", "energy_idle_j", "energy_j")


def _link_costs(link) -> tuple[float, float, float, float]:
    """(tx J/bit, rx J/bit, tail W, tail s) of a link (zeros without a radio)."""
    radio = getattr(link, "radio", None) if link is not None else None
    if radio is None:
        return 0.0, 0.0, 0.0, 0.0
    return (radio.j_per_bit("tx", link.bandwidth_bps), radio.j_per_bit("rx", link.bandwidth_bps),
            radio.tail_w, radio.tail_s)


def multicast_tx_j_per_bit(devices: Sequence[Any]) -> float:
    """J/bit of the master's one transmission of an input on a shared medium: the medium runs at
    the slowest networked link's bandwidth, with the costliest of their radios (all alike when the
    network profile gives the radio)."""
    links = [d.link for d in devices if d.link is not None]
    if not links:
        return 0.0
    bw = min(link.bandwidth_bps for link in links)
    return max(link.radio.j_per_bit("tx", bw) if getattr(link, "radio", None) is not None else 0.0
               for link in links)


def tail_energy(arrivals: np.ndarray, tail_w: float, tail_s: float) -> np.ndarray:
    """Per input (sorted arrival times): ``tail_w * min(gap to the next, tail_s)`` (the last: the
    whole tail)."""
    arrivals = np.asarray(arrivals, dtype=np.float64)
    if not len(arrivals) or tail_w == 0.0 or tail_s == 0.0:
        return np.zeros(len(arrivals))
    gap = np.append(np.diff(arrivals), np.inf)
    return tail_w * np.minimum(gap, tail_s)


def has_energy(world: Any) -> bool:
    """Whether any device of ``world`` (a :class:`vip_ray.core.world.SimSpec`) has a power or radio model."""
    return world is not None and has_energy_devices(world.devices)


def device_energy(world: Any, devices: Any, input_bytes: Sequence[int] | int, arrivals: np.ndarray):
    """The :data:`DEVICE_ENERGY_COLUMNS` of one replication's device table ``devices`` (rows in
    ``world.devices`` order), as a dict of arrays. ``input_bytes``: the bytes each device receives
    per input (one number, or one per device); ``arrivals``: the replication's request arrival
    times (for the radio tail)."""
    d = len(world.devices)
    busy = devices["busy_s"].to_numpy(np.float64)
    avail = devices["available_s"].to_numpy(np.float64)
    inputs = devices["jobs"].to_numpy(np.float64) + devices["lost_down"].to_numpy(np.float64)
    replies = devices["served"].to_numpy(np.float64)
    in_bytes = np.broadcast_to(np.asarray(input_bytes, dtype=np.float64), (d,))
    compute, idle, radio = np.zeros(d), np.zeros(d), np.zeros(d)
    master = next((i for i, dev in enumerate(world.devices) if dev.role == "master"), None)
    shared = bool(getattr(world, "shared_medium", False))
    master_tail = 0.0
    tails: dict[tuple[float, float], float] = {}
    if shared and master is not None:   # one transmission of each input serves every networked device
        networked = [i for i, dev in enumerate(world.devices) if dev.link is not None]
        if networked:
            sent = max(inputs[i] for i in networked)
            radio[master] += 8.0 * max(in_bytes[i] for i in networked) * sent * multicast_tx_j_per_bit(world.devices)
    for i, dev in enumerate(world.devices):
        p = getattr(dev, "power", None)
        if p is not None:
            compute[i] = busy[i] * p.busy_w
            idle[i] = max(avail[i] - busy[i], 0.0) * p.idle_w
        tx, rx, tail_w, tail_s = _link_costs(dev.link)
        if tx == rx == tail_w == 0.0:
            continue
        bits_in, bits_out = 8.0 * in_bytes[i] * inputs[i], 8.0 * dev.reply_bytes * replies[i]
        tail = 0.0
        if inputs[i] and tail_w and tail_s:   # links alike share one tail sum (a city has 10,000 devices)
            if (tail_w, tail_s) not in tails:
                tails[tail_w, tail_s] = float(tail_energy(arrivals, tail_w, tail_s).sum())
            tail = tails[tail_w, tail_s]
        radio[i] += bits_in * rx + bits_out * tx + tail
        if master is not None:   # the other end of the link: same technology, same costs
            radio[master] += (0.0 if shared else bits_in * tx) + bits_out * rx
            master_tail = max(master_tail, tail)
    if master is not None:       # one radio at the master: one tail after each input, not one per link
        radio[master] += master_tail
    return {"energy_compute_j": compute, "energy_radio_j": radio, "energy_idle_j": idle,
            "energy_j": compute + radio + idle}


def _device_vectors(devices: Sequence[Any], input_bytes: float,
                    shared: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per device: ``busy_w`` (0 without a power block), J of one input on its link and J of one
    reply, both ends (tx + rx of the link's technology; 0 without a link or a radio). On a shared
    medium an input's J is its receiver's only: the master's one transmission is the request's
    (:func:`multicast_tx_j_per_bit`)."""
    busy = np.array([p.busy_w if (p := getattr(d, "power", None)) is not None else 0.0 for d in devices])
    costs = [_link_costs(d.link) for d in devices]
    both = np.array([c[0] + c[1] for c in costs])
    receive = np.array([c[1] for c in costs]) if shared else both
    reply = np.array([8.0 * d.reply_bytes for d in devices], dtype=np.float64)
    return busy, 8.0 * float(input_bytes) * receive, reply * both


def request_energy(parts: Sequence[tuple[Sequence[Any], float, int]], timing: Any, use: np.ndarray,
                   shared_medium: bool | Sequence[bool] = False) -> np.ndarray:
    """(R,) ``energy_j`` of the rows of ``timing`` (the (R, D) job arrays: ``outcome``, and
    ``start_at`` / ``end_at`` / ``paused_s`` when the engine records stage times) whose used
    replies are ``use`` (R, D): each used job's compute time at its device's ``busy_w``, plus every
    input sent and every reply sent at both ends of its link (see the module doc). ``parts``: the
    ``(devices, input_bytes, rows)`` of consecutive row blocks (a multi-master run's cells; one
    block otherwise); ``shared_medium`` (one flag, or one per part): the master transmits each
    input once, for every networked device it was sent to. NaN everywhere when no device has a
    power or radio model."""
    from vip_ray.core.breakdown import has_stages
    from vip_ray.core.tables import Outcome

    r = len(use)
    if not any(has_energy_devices(devs) for devs, _, _ in parts):
        return np.full(r, np.nan)
    shared = [shared_medium] * len(parts) if isinstance(shared_medium, (bool, np.bool_)) else list(shared_medium)
    vecs = [_device_vectors(devs, ib, sh) for (devs, ib, _), sh in zip(parts, shared)]
    # the master's one transmission of each input on a shared medium (0 elsewhere), and who hears it
    cast = [8.0 * float(ib) * multicast_tx_j_per_bit(devs) if sh else 0.0 for (devs, ib, _), sh in zip(parts, shared)]
    counts = [n for _, _, n in parts]
    if len(parts) == 1:
        busy, in_j, out_j = vecs[0]
    else:   # one row of per-device costs per request (cells of one size, stacked)
        busy, in_j, out_j = (np.repeat(np.stack([v[k] for v in vecs]), counts, axis=0) for k in range(3))
    if has_stages(timing):
        with np.errstate(invalid="ignore"):
            work = np.where(use, timing.end_at - timing.start_at - timing.paused_s, 0.0)
    else:   # no stage times: the used device's mean service time
        service = [np.array([next((s.service_s for s in d.slots if s.placed), 0.0) for d in devs])
                   for devs, _, _ in parts]
        work = use * (service[0] if len(parts) == 1 else np.repeat(np.stack(service), counts, axis=0))
    outcome = np.asarray(timing.outcome)
    if outcome.dtype.kind == "f":   # a live engine's jobs: NaN where none was recorded
        outcome = np.where(np.isnan(outcome), Outcome.NOT_SENT, outcome)
    sent = outcome != Outcome.NOT_SENT
    replied = (outcome == Outcome.REPLIED) | (outcome == Outcome.LOST_UP)
    if busy.ndim == 1:
        out = work @ busy + sent @ in_j + replied @ out_j
    else:
        out = (work * busy).sum(axis=1) + (sent * in_j).sum(axis=1) + (replied * out_j).sum(axis=1)
    if any(cast):
        nets = [np.array([d.link is not None for d in devs]) for devs, _, _ in parts]
        heard = sent & (nets[0] if len(parts) == 1 else np.repeat(np.stack(nets), counts, axis=0))
        out = out + heard.any(axis=1) * (cast[0] if len(parts) == 1 else np.repeat(cast, counts))
    return out


def chain_energy(devices: Sequence[Any], work: np.ndarray, link_bytes: np.ndarray, answered: np.ndarray) -> np.ndarray:
    """(R,) ``energy_j`` of a chain's (mp) requests: an answered request's slices, each for the time
    it computed (``work`` (R, D)) at its device's ``busy_w``, plus every byte it put on a device's
    link (``link_bytes`` (R, D)) at both ends; NaN without a power or radio model."""
    if not has_energy_devices(devices):
        return np.full(len(work), np.nan)
    busy, _, _ = _device_vectors(devices, 0)
    both = np.array([sum(_link_costs(d.link)[:2]) for d in devices])
    return np.where(answered, work @ busy, 0.0) + 8.0 * (link_bytes @ both)


def has_energy_devices(devices: Sequence[Any]) -> bool:
    """Whether any of ``devices`` has a power block or a link with a radio."""
    return any(getattr(d, "power", None) is not None or _link_costs(d.link) != (0, 0, 0, 0) for d in devices)


class EnergyMeter:
    """One replication's energy: ``annotate`` appends ``energy_j`` to each request chunk,
    ``devices`` the energy columns to the device table, ``figures`` the summary's figures.

    ``world``: the deployment's :class:`vip_ray.core.world.SimSpec` (None: no energy model; the
    columns are NaN); ``service_s``: each device's mean compute time per job (its first slot)."""

    def __init__(self, world: Any, input_bytes: Sequence[int] | int | None = None):
        self.world = world if has_energy(world) else None
        self.arrivals: list[np.ndarray] = []
        self.correct = 0.0
        self.requests = 0
        self.total_j = float("nan")
        if self.world is None:
            return
        devs = world.devices
        self.names = [d.name for d in devs]
        self.input_bytes = world.workload.input_bytes if input_bytes is None else input_bytes
        # a responder's compute: its first placed slot's mean service time at busy power
        self.job_j = {}
        for d in devs:
            s = next((s for s in d.slots if s.placed), None)
            p = getattr(d, "power", None)
            self.job_j[d.name] = (s.service_s * p.busy_w) if (s is not None and p is not None) else 0.0
        costs = [_link_costs(d.link) for d in devs if d.link is not None]
        self.j_per_bit = float(np.mean([tx + rx for tx, rx, _, _ in costs])) if costs else 0.0

    def annotate(self, rows):
        """``rows`` with ``energy_j`` appended (NaN without an energy model)."""
        self.requests += len(rows)
        self.correct += float(rows["correct_top1"].sum())
        arrival = rows["arrival_s"].to_numpy(np.float64)
        self.arrivals.append(arrival)
        if self.world is None:
            rows["energy_j"] = np.nan
            return rows
        if "energy_j" in rows:   # the engine's tables computed it from the jobs (request_energy): last column
            rows["energy_j"] = rows.pop("energy_j")
            return rows
        # no per-job times (a table built without them): each used device's mean service time, the mean J/bit
        cat = rows["responders"].cat
        per_set = np.array([sum(self.job_j.get(n, 0.0) for n in str(label).split(",") if n)
                            for label in cat.categories], dtype=np.float64)
        codes = cat.codes.to_numpy()
        compute = np.where(codes >= 0, per_set[np.maximum(codes, 0)] if len(per_set) else 0.0, 0.0)
        bits = 8.0 * (rows["bytes_down"].to_numpy(np.float64) + rows["bytes_up"].to_numpy(np.float64))
        rows["energy_j"] = compute + bits * self.j_per_bit
        return rows

    def devices(self, frame):
        """The device table with :data:`DEVICE_ENERGY_COLUMNS` appended."""
        arrivals = np.concatenate(self.arrivals) if self.arrivals else np.zeros(0)
        if self.world is None or len(frame) != len(self.world.devices):
            for c in DEVICE_ENERGY_COLUMNS:
                frame[c] = np.nan
            return frame
        cols = device_energy(self.world, frame, self.input_bytes, arrivals)
        for c in DEVICE_ENERGY_COLUMNS:
            frame[c] = cols[c]
        self.total_j = float(cols["energy_j"].sum())
        return frame

    def figures(self) -> dict[str, float]:
        """``energy_j`` (all devices), ``energy_per_request_j``, ``energy_per_correct_j``."""
        nan = float("nan")
        total = self.total_j
        return {"energy_j": total,
                "energy_per_request_j": total / self.requests if self.requests and not math.isnan(total) else nan,
                "energy_per_correct_j": total / self.correct if self.correct and not math.isnan(total) else nan}


# ----------------------------------------------------------------------------------------- battery

def mean_power(dev: Any, rate_hz: float, input_bytes: int, worker_links: Sequence[tuple] = (),
               multicast_j_per_bit: float | None = None) -> float:
    """Expected mean power (W) of ``dev`` under ``rate_hz`` inputs per second (see the module doc):
    compute at utilisation ``min(1, rate * service_s)``, its radio's per-bit costs and tail; the
    master (``worker_links``: ``(link, reply_bytes)`` of every worker) pays the other end of every
    link and one tail — on a shared medium (``multicast_j_per_bit``) one transmission per input."""
    p = getattr(dev, "power", None)
    out = 0.0
    if p is not None:
        s = next((s.service_s for s in dev.slots if s.placed), 0.0)
        rho = min(1.0, rate_hz * s)
        out += p.idle_w + rho * (p.busy_w - p.idle_w)
    bits_in = 8.0 * input_bytes
    tail_power = 0.0
    if dev.link is not None:
        tx, rx, tail_w, tail_s = _link_costs(dev.link)
        out += rate_hz * (bits_in * rx + 8.0 * dev.reply_bytes * tx)
        if tail_w and tail_s and rate_hz > 0:
            tail_power = tail_w * (1.0 - math.exp(-rate_hz * tail_s))
    else:
        if multicast_j_per_bit is not None and worker_links:
            out += rate_hz * bits_in * multicast_j_per_bit
        for link, reply_bytes in worker_links:
            tx, rx, tail_w, tail_s = _link_costs(link)
            out += rate_hz * ((0.0 if multicast_j_per_bit is not None else bits_in * tx) + 8.0 * reply_bytes * rx)
            if tail_w and tail_s and rate_hz > 0:
                tail_power = max(tail_power, tail_w * (1.0 - math.exp(-rate_hz * tail_s)))
    return out + tail_power


def depletion_s(battery_wh: float, power_w: float) -> float:
    """When a battery of ``battery_wh`` Wh is empty at a mean draw of ``power_w`` W (inf at 0 W)."""
    return math.inf if power_w <= 0 else battery_wh * 3600.0 / power_w


def with_batteries(world: Any) -> Any:
    """``world`` with each battery-powered device's availability turned into a crash at its
    depletion time (the earlier one if it already crashes)."""
    devs = list(world.devices)
    if not any(getattr(d, "battery_wh", None) for d in devs):
        return world
    w = world.workload
    if w.arrival == "trace":
        span = (w.times[-1] - w.times[0]) if len(w.times) > 1 else 0.0
        rate = (len(w.times) - 1) / span if span > 0 else 0.0
    else:
        rate = w.rate_hz
    links = [(d.link, d.reply_bytes) for d in devs if d.link is not None]
    mc = multicast_tx_j_per_bit(devs) if getattr(world, "shared_medium", False) else None
    for i, d in enumerate(devs):
        if not getattr(d, "battery_wh", None):
            continue
        t = depletion_s(d.battery_wh, mean_power(d, rate, w.input_bytes, links if d.link is None else (), mc))
        if not math.isfinite(t):
            continue
        av = d.availability
        if av.kind == "crash":
            t = min(t, av.crash_at_s)
        elif av.kind != "always":
            raise ValueError(f"DeviceSpec({d.name!r}).battery_wh: needs availability 'always' or 'crash', "
                             f"got {av.kind!r}")
        devs[i] = replace(d, availability=Availability(kind="crash", crash_at_s=t))
    return replace(world, devices=tuple(devs))


class PipelineMeter(EnergyMeter):
    """An end–cloud pipeline's energy (the module doc): ``setup`` is the run's
    :class:`vip_ray.coach.runner.Setup` (``end_power``, ``cloud_power``, ``link.radio``). The device
    table's rows are the end device, the link (its radios are at its ends: no energy of its own)
    and the cloud."""

    def __init__(self, setup: Any):
        self.arrivals, self.sent_at = [], []
        self.correct, self.requests = 0.0, 0
        self.total_j = float("nan")
        self.end_p, self.cloud_p = getattr(setup, "end_power", None), getattr(setup, "cloud_power", None)
        self.tx, self.rx, self.tail_w, self.tail_s = _link_costs(setup.link)
        self.world = setup if (self.end_p is not None or self.cloud_p is not None
                               or (self.tx, self.rx, self.tail_w) != (0, 0, 0)) else None
        self.bits_up = self.bits_down = 0.0

    def annotate(self, rows):
        self.requests += len(rows)
        self.correct += float(rows["correct_top1"].sum())
        self.arrivals.append(rows["arrival_s"].to_numpy(np.float64))
        if self.world is None:
            rows["energy_j"] = np.nan
            return rows
        up = 8.0 * rows["bytes_up"].to_numpy(np.float64)
        down = 8.0 * rows["bytes_down"].to_numpy(np.float64)
        self.bits_up += float(up.sum())
        self.bits_down += float(down.sum())
        self.sent_at.append(rows["arrival_s"].to_numpy(np.float64)[up > 0])
        end_w = self.end_p.busy_w if self.end_p is not None else 0.0
        cloud_w = self.cloud_p.busy_w if self.cloud_p is not None else 0.0
        rows["energy_j"] = (rows["t_end_s"].to_numpy(np.float64) * end_w
                            + rows["t_cloud_s"].to_numpy(np.float64) * cloud_w + (up + down) * (self.tx + self.rx))
        return rows

    def devices(self, frame):
        roles = list(frame["role"])
        if self.world is None or "end" not in roles or "cloud" not in roles:
            for c in DEVICE_ENERGY_COLUMNS:
                frame[c] = np.nan
            return frame
        n, end, cloud = len(roles), roles.index("end"), roles.index("cloud")
        busy = frame["busy_s"].to_numpy(np.float64)
        avail = frame["available_s"].to_numpy(np.float64)
        compute, idle, radio = np.zeros(n), np.zeros(n), np.zeros(n)
        for i, p in ((end, self.end_p), (cloud, self.cloud_p)):
            if p is not None:
                compute[i] = busy[i] * p.busy_w
                idle[i] = max(avail[i] - busy[i], 0.0) * p.idle_w
        sent = np.sort(np.concatenate(self.sent_at)) if self.sent_at else np.zeros(0)
        tail = float(tail_energy(sent, self.tail_w, self.tail_s).sum())
        # the end device sends the tensors and receives the answer; the cloud the other way round
        radio[end] = self.bits_up * self.tx + self.bits_down * self.rx + tail
        radio[cloud] = self.bits_up * self.rx + self.bits_down * self.tx + tail
        for c, v in zip(DEVICE_ENERGY_COLUMNS, (compute, radio, idle, compute + radio + idle)):
            frame[c] = v
        self.total_j = float((compute + radio + idle).sum())
        return frame


def meter_for(dep: Any) -> EnergyMeter:
    """The :class:`EnergyMeter` of one replication of a deployment: a fan-out's world as it is; a
    chain's devices each receive the activations of the slices they run (the master's own input
    crosses no link); an end–cloud pipeline's :class:`PipelineMeter`."""
    setup = getattr(dep, "setup", None)
    if setup is not None:
        return PipelineMeter(setup)
    world = getattr(dep, "world", None)
    if world is None:
        return EnergyMeter(None)
    stages = getattr(dep, "stages", None)
    if stages:
        per_device = np.zeros(len(world.devices), dtype=np.int64)
        for s, d in enumerate(stages):
            per_device[d] += dep.stage_bytes[s]
        return EnergyMeter(world, input_bytes=per_device)
    return EnergyMeter(world)
