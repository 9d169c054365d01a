"""``vip-sim validate FILE``: the same scenario and seed on the simulator and live on Ray Serve,
and how far apart they are.

The error table (also ``validate.json`` in the output folder, and ``--json``):

* ``p50_rel_err``, ``p99_rel_err``, ``mean_rel_err`` — |live − sim| / sim of the answered
  requests' latency (live: measured at the master, divided by the time dilation);
* ``deadline_met_diff``, ``answered_diff``, ``top1_diff`` — live − sim, in percentage points;
* ``responders_agree``, ``predictions_agree`` — the share of requests answered by the same
  devices, and with the same prediction.

It passes when every relative error is within ``latency_tol`` (5 %) and every rate within
``rate_tol`` points (0.5), as inference-serving simulators report their error against real runs
(Vidur < 9 %, Revati < 5 %).
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from vip_ray.core.results import atomic_directory, check_new_folder

LATENCY_KEYS = ("p50_rel_err", "p99_rel_err", "mean_rel_err")
RATE_KEYS = ("deadline_met_diff", "answered_diff", "top1_diff")


def errors(sim, live) -> dict[str, float]:
    """The error table of two request tables of the same replication (same arrivals and inputs)."""
    import numpy as np

    if len(sim) != len(live) or not np.array_equal(sim["arrival_s"].to_numpy(), live["arrival_s"].to_numpy()):
        raise ValueError("the two runs did not replay the same requests")
    s = sim["latency_s"].dropna().to_numpy()
    v = live["latency_s"].dropna().to_numpy()

    def rel(a: float, b: float) -> float:
        return float(abs(b - a) / a) if a > 0 else (0.0 if b == a else float("inf"))

    def pts(col: str) -> float:
        return float(100.0 * (live[col].mean() - sim[col].mean())) if len(sim) else 0.0

    out = {
        "requests": int(len(sim)),
        "p50_rel_err": rel(float(np.quantile(s, 0.5)), float(np.quantile(v, 0.5))) if len(s) and len(v) else None,
        "p99_rel_err": rel(float(np.quantile(s, 0.99)), float(np.quantile(v, 0.99))) if len(s) and len(v) else None,
        "mean_rel_err": rel(float(s.mean()), float(v.mean())) if len(s) and len(v) else None,
        "deadline_met_diff": pts("deadline_met"), "answered_diff": pts("answered"), "top1_diff": pts("correct_top1"),
        "responders_agree": float((sim["responders"].astype(str).to_numpy()
                                   == live["responders"].astype(str).to_numpy()).mean()) if len(sim) else 1.0,
        "predictions_agree": float((sim["prediction"].to_numpy() == live["prediction"].to_numpy()).mean())
        if len(sim) else 1.0,
        "sim_p50_ms": 1e3 * float(np.quantile(s, 0.5)) if len(s) else None,
        "live_p50_ms": 1e3 * float(np.quantile(v, 0.5)) if len(v) else None,
        "sim_p99_ms": 1e3 * float(np.quantile(s, 0.99)) if len(s) else None,
        "live_p99_ms": 1e3 * float(np.quantile(v, 0.99)) if len(v) else None,
        **{f"{side}_{col}": float(100.0 * df[col].mean()) if len(df) else None
           for side, df in (("sim", sim), ("live", live)) for col in ("deadline_met", "answered", "correct_top1")},
        "sim_mean_ms": 1e3 * float(s.mean()) if len(s) else None,
        "live_mean_ms": 1e3 * float(v.mean()) if len(v) else None,
    }
    return out


def verdict(err: dict[str, Any], latency_tol: float, rate_tol: float) -> list[str]:
    """What exceeds its threshold (empty: the live engine agrees with the simulator)."""
    bad = [f"{k} {100 * err[k]:.1f} % > {100 * latency_tol:g} %" for k in LATENCY_KEYS
           if err[k] is None or err[k] > latency_tol]
    bad += [f"{k} {err[k]:+.2f} points (limit ±{rate_tol:g})" for k in RATE_KEYS if abs(err[k]) > rate_tol]
    return bad


def validate_scenario(path: str | Path, *, requests: int = 300, overrides: Sequence[str] = (),
                      out: str | Path | None = None, serve_options=None, latency_tol: float = 0.05,
                      rate_tol: float = 0.5, log: Callable[[str], None] = print, progress_factory=None) -> dict:
    """Run ``path`` (one replication of ``requests`` requests) on the simulator and on Serve into
    ``out`` (``sim/``, ``serve/``, ``validate.json``); return the report."""
    import pandas as pd

    from vip_ray.experiment.run import RunError, run_scenario
    from vip_ray.scenario import load_scenario
    from vip_ray.serve.config import ServeOptions

    if requests < 1:
        raise RunError(f"--requests: expected a positive count, got {requests}")
    if not (0 < latency_tol < 1) or rate_tol < 0:
        raise RunError(f"thresholds: latency_tol must be in (0, 1) and rate_tol >= 0, got {latency_tol}, {rate_tol}")
    base = load_scenario(path, overrides)   # bad input fails here, before anything runs
    over = [*overrides, "seeds.replications=1", f"workload.requests={requests}"]
    if base.workload.duration_s is not None:  # a length in seconds gives way to the request count
        over.append("workload.duration_s=null")
    scenario = load_scenario(path, over)
    options = serve_options or ServeOptions(time_dilation="auto")
    out_dir = Path(out) if out else Path("results/validate") / f"{scenario.name}-{datetime.now():%Y%m%d-%H%M%S}"
    check_new_folder(out_dir)
    with atomic_directory(out_dir) as tmp:
        log(f"[vip_ray] validate {scenario.name}: {requests} requests, simulator first, then live on Ray Serve")
        sim_dir = run_scenario(path, overrides=over, out=tmp / "sim", engine="sim", plots=False, log=log,
                               progress_factory=progress_factory)
        live_dir = run_scenario(path, overrides=over, out=tmp / "serve", engine="serve", plots=False, log=log,
                                progress_factory=progress_factory, serve_options=options)
        err = errors(pd.read_parquet(sim_dir / "requests.parquet"), pd.read_parquet(live_dir / "requests.parquet"))
        live_summary = json.loads((live_dir / "summary.json").read_text())
        serve = live_summary.get("serve", {})
        bad = verdict(err, latency_tol, rate_tol)
        report = {"scenario": scenario.name, "file": str(path), **err,
                  "time_dilation": serve.get("time_dilation"),
                  "harness_overhead_p50_ms": serve.get("harness_overhead_p50_ms"),
                  "harness_overhead_share": serve.get("harness_overhead_share"),
                  "latency_tol": latency_tol, "rate_tol": rate_tol, "passed": not bad, "exceeded": bad}
        (tmp / "validate.json").write_text(json.dumps(report, indent=2))
    report["out"] = str(out_dir)
    return report
