"""Custom metrics of the emulation, exported with ``ray.util.metrics`` (Prometheus format, on
every node's metrics port; the Ray dashboard's Metrics view and Grafana read them there).

============================================  =========  ==============================================
name (Prometheus: prefixed ``ray_``)          kind       tags
============================================  =========  ==============================================
``vip_requests_total``                        counter    app, outcome (answered | fallback | unanswered)
``vip_deadline_misses_total``                 counter    app
``vip_responders_per_request``                histogram  app
``vip_latency_ms``                            histogram  app
``vip_harness_overhead_ms``                   histogram  app   (measured latency − emulated latency)
``vip_device_available``                      gauge      app, device (1 available, 0 down / busy)
============================================  =========  ==============================================
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

LATENCY_MS = [1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000]
RESPONDERS = [0.5 + b for b in range(12)] + [15.5, 20.5, 30.5, 50.5, 100.5]
OVERHEAD_MS = [0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 50, 100]


@dataclass(frozen=True)
class IngressMetrics:
    requests: Any
    deadline_misses: Any
    responders: Any
    latency_ms: Any
    overhead_ms: Any


@dataclass(frozen=True)
class DeviceMetrics:
    available: Any


@lru_cache(maxsize=None)
def ingress_metrics() -> IngressMetrics:
    from ray.util.metrics import Counter, Histogram

    return IngressMetrics(
        requests=Counter("vip_requests_total", "Requests handled by the emulation's master",
                         tag_keys=("app", "outcome")),
        deadline_misses=Counter("vip_deadline_misses_total", "Requests not answered by the deadline",
                                tag_keys=("app",)),
        responders=Histogram("vip_responders_per_request", "Devices whose replies a request used",
                             boundaries=RESPONDERS, tag_keys=("app",)),
        latency_ms=Histogram("vip_latency_ms", "Measured request latency at the master (ms)",
                             boundaries=LATENCY_MS, tag_keys=("app",)),
        overhead_ms=Histogram("vip_harness_overhead_ms", "Measured minus emulated latency (ms)",
                              boundaries=OVERHEAD_MS, tag_keys=("app",)))


@lru_cache(maxsize=None)
def device_metrics() -> DeviceMetrics:
    from ray.util.metrics import Gauge

    return DeviceMetrics(available=Gauge("vip_device_available", "1 while the emulated device is available",
                                         tag_keys=("app", "device")))


def process_memory_mb() -> dict[str, float]:
    """This process's resident set (RSS) and proportional set (PSS: shared pages split among the
    processes that map them), MB. Linux reads /proc; elsewhere the peak RSS stands in for both."""
    try:
        fields = {}
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] in ("Rss:", "Pss:"):
                    fields[parts[0][:-1].lower()] = int(parts[1]) / 1024.0
        return {"rss_mb": fields["rss"], "pss_mb": fields["pss"]}
    except (OSError, KeyError, ValueError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
        return {"rss_mb": peak, "pss_mb": peak}


def system_memory_gb() -> dict[str, float]:
    """Total and available memory of this machine, GB (Linux /proc/meminfo; empty elsewhere)."""
    try:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) / 2**20
        return {"total_gb": round(info["MemTotal"], 2), "available_gb": round(info["MemAvailable"], 2)}
    except (OSError, KeyError, ValueError):
        return {}
