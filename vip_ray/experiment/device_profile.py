"""``vip-sim profile --pool POOL --out sim/devices/NAME.yaml [--resources JSON]``: measure a
real node's forward-pass latency for every member of a pool and write a device profile.

The measurement runs as a Ray task on the node that offers ``--resources`` (e.g. an edge board
that joined the cluster with ``ray start --resources '{"edge_board_1": 1}'``), the way the
Serve engine's device replicas run the variants there (batch 1, ``--inference jit|eager``, the
pool's weights shipped with the task: the node needs no pool store). Per member: p50, p90, mean
and the coefficient of variation of ``--repeats`` timed passes after ``--warmup`` untimed ones.

The profile uses the catalog's own fields: ``latency_ms`` (p50 per member), ``service_dist:
lognormal`` with ``jitter_cv`` (the median of the members' CVs) — the fit the simulator draws
service times from; the per-member table and the provenance (host, CPU model, threads, torch
version, date) are in ``source`` / ``derivation`` and in a comment block at the top.
"""
from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from vip_ray.errors import UserError

Log = Callable[[str], None]


class ProfileError(UserError):
    pass


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(members: Sequence[dict], weights: dict[str, bytes], input_shape: Sequence[int], *, repeats: int,
            warmup: int, threads: int | None, inference: str) -> dict[str, Any]:
    """Time batch-1 forward passes of ``members`` here (the node this runs on)."""
    import os
    import time
    from types import SimpleNamespace

    import torch

    from vip_ray.serve.device import load_models

    if threads:
        torch.set_num_threads(threads)
    variants = tuple(SimpleNamespace(id=m["id"], model=m["model"], build=m["build"]) for m in members)
    cfg = SimpleNamespace(variants=variants, input_shape=tuple(input_shape),
                          options=SimpleNamespace(inference=inference))
    models = load_models(cfg, range(len(variants)), dict(enumerate(weights[m["id"]] for m in members)))
    x = torch.zeros((1,) + tuple(input_shape))
    times: dict[str, list[float]] = {}
    with torch.inference_mode():
        for i, m in enumerate(members):
            model = models[i]
            for _ in range(warmup):
                model(x)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                ts.append(time.perf_counter() - t0)
            times[m["id"]] = ts
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {"times_s": times, "node_id": node, "host": platform.node(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "inference": inference}


def stats(times_s: Sequence[float]) -> dict[str, float]:
    import numpy as np

    t = 1e3 * np.asarray(times_s, dtype=np.float64)
    mean = float(t.mean())
    return {"p50_ms": float(np.quantile(t, 0.5)), "p90_ms": float(np.quantile(t, 0.9)), "mean_ms": mean,
            "cv": float(t.std(ddof=1) / mean) if len(t) > 1 and mean > 0 else 0.0}


def jitter_cv(per: dict[str, dict[str, float]]) -> float:
    """The profile's one ``jitter_cv``: the median of the members' coefficients of variation."""
    import numpy as np

    return float(f"{float(np.median([s['cv'] for s in per.values()])):.3g}") if per else 0.0


def profile_yaml(name: str, pool_name: str, fingerprint: str | None, result: dict, resources: dict | None,
                 repeats: int, warmup: int, when: datetime) -> str:
    """The device profile (catalog YAML) of a measurement."""
    import yaml

    per = {m: stats(ts) for m, ts in result["times_s"].items()}
    cv = jitter_cv(per)
    host = f"{result['host']} ({result['cpu']}, {result['cores']} cores, {result['machine']})"
    prov = (f"measured by vip-sim profile on {host}, {when:%Y-%m-%d %H:%M} UTC; torch {result['torch']} with "
            f"{result['threads']} thread(s), {result['inference']} inference, Python {result['python']}; pool "
            f"{pool_name!r} (fingerprint {fingerprint}); Ray resources {json.dumps(resources or {})}")
    body = {
        "name": name,
        "description": f"Measured on {host}.",
        "source": prov,
        "derivation": (f"Batch-1 forward passes: {warmup} untimed, then {repeats} timed per member. latency_ms = "
                       f"p50; service_dist lognormal with jitter_cv = the median of the members' coefficients of "
                       f"variation ({cv:.3f}). Per member (p50 / p90 / mean ms, cv): "
                       + "; ".join(f"{m} {s['p50_ms']:.3f} / {s['p90_ms']:.3f} / {s['mean_ms']:.3f}, "
                                   f"{s['cv']:.3f}" for m, s in per.items()) + "."),
        "latency_ms": {m: float(f"{s['p50_ms']:.4g}") for m, s in per.items()},
        "service_dist": "lognormal",
        "jitter_cv": cv,
        "availability": "always",
    }
    head = ["# Device profile measured by `vip-sim profile` (vip_ray.experiment.device_profile).",
            f"# {prov}", "#", "# member            p50 ms    p90 ms   mean ms      cv"]
    head += [f"# {m:<16} {s['p50_ms']:8.3f}  {s['p90_ms']:8.3f}  {s['mean_ms']:8.3f}  {s['cv']:6.3f}"
             for m, s in per.items()]
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False, width=100, allow_unicode=True)


def profile_device(pool: str, out: str | Path, *, name: str | None = None, resources: dict | None = None,
                   address: str | None = None, members: Sequence[str] | None = None, repeats: int = 50,
                   warmup: int = 5, threads: int | None = None, inference: str = "jit", root: str | None = None,
                   log: Log = print) -> dict[str, Any]:
    """Measure ``pool``'s members on the node offering ``resources`` (any node: none given) and
    write the profile to ``out``; return the report (per-member figures, provenance, path)."""
    out = Path(out)
    if out.exists():
        raise ProfileError(f"{out} already exists; pick another --out (nothing was overwritten)")
    if repeats < 2 or warmup < 0:
        raise ProfileError(f"--repeats must be >= 2 and --warmup >= 0, got {repeats} and {warmup}")
    if threads is not None and threads < 1:
        raise ProfileError(f"--threads must be >= 1, got {threads}")
    if inference not in ("jit", "eager"):
        raise ProfileError(f"--inference: expected jit or eager, got {inference!r}")
    bad = {k: v for k, v in (resources or {}).items() if not isinstance(v, (int, float)) or not v > 0}
    if bad:
        raise ProfileError(f"--resources: amounts must be numbers > 0, got {json.dumps(bad)}")
    from vip_ray.pool import Pool

    try:
        p = Pool.open(pool, root)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise ProfileError(f"--pool: {e}") from None
    records = list(p.manifest.members)
    ids = [m.id for m in records]
    if members:
        unknown = sorted(set(members) - set(ids))
        if unknown:
            raise ProfileError(f"--members: no member {', '.join(unknown)} in pool {p.name!r}; members: "
                               f"{', '.join(ids)}")
        records = [m for m in records if m.id in set(members)]
    specs = [{"id": m.id, "model": m.model, "build": dict(m.build)} for m in records]
    weights = {m.id: (p.path / m.weights).read_bytes() for m in records}
    from vip_ray.serve.engine import bank_inputs

    shape = tuple(int(s) for s in bank_inputs(p).shape[1:])
    import ray

    from vip_ray.interrupts import start_ray

    own = not ray.is_initialized()
    if own:
        try:
            start_ray(address=address, log_to_driver=False, include_dashboard=False)
        except Exception as e:  # noqa: BLE001  (an unreachable --address)
            raise ProfileError(f"--address: cannot join Ray at {address!r}: {e}") from None
    try:
        offered = ray.cluster_resources()
        missing = {k: v for k, v in (resources or {}).items() if offered.get(k, 0) < v}
        if missing:
            raise ProfileError(f"--resources: no node offers {json.dumps(missing)}; the cluster offers "
                               f"{', '.join(sorted(k for k in offered if not k.startswith('node:'))) or 'nothing'}")
        log(f"[vip_ray] profiling {len(specs)} members of pool {p.name!r} ({repeats} timed passes each) on "
            + (f"the node offering {json.dumps(resources)}" if resources else "any node"))
        task = ray.remote(measure).options(num_cpus=1, resources=dict(resources or {}), name="vip-profile")
        result = ray.get(task.remote(specs, weights, shape, repeats=repeats, warmup=warmup, threads=threads,
                                     inference=inference))
    finally:
        if own:
            ray.shutdown()
    when = datetime.now(timezone.utc)
    dev_name = name or out.stem
    text = profile_yaml(dev_name, p.name, p.manifest.data.get("fingerprint"), result, resources, repeats, warmup,
                        when)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(out)   # never a half-written profile
    per = {m: stats(ts) for m, ts in result["times_s"].items()}
    return {"out": str(out), "name": dev_name, "pool": p.name, "members": per, "jitter_cv": jitter_cv(per),
            **{k: v for k, v in result.items() if k != "times_s"}, "date": when.isoformat(timespec="seconds")}
