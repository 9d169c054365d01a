"""Joining or starting the Ray cluster a command runs on, for any layer (studies, Serve): one
reachability check, one start-up, one count of the CPUs on offer. Imports Ray only when called.

* :func:`check_reachable` — fail in seconds on a ``host:port`` nobody listens at (``ray.init``
  would retry for minutes);
* :func:`join_or_start` — reuse this process's Ray, join ``address``, or start a local cluster;
  says whether it started one (then :func:`stop` it);
* :func:`local_cpus` / :func:`cluster_cpus` — the CPUs a local cluster would get / a cluster has.
"""
from __future__ import annotations

import os
import socket
from typing import Any

from vip_ray.errors import UserError


class ClusterError(UserError, RuntimeError):
    """A Ray cluster that cannot be reached or started, or that cannot give what was asked."""


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Refuse an address nobody listens at, naming it. ``auto`` and ``None`` are checked by
    ``ray.init`` itself (it answers at once when no cluster runs)."""
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep:
        raise ClusterError(f"--address {address!r}: expected host:port (e.g. 10.0.0.5:6379), ray://host:10001 "
                           f"or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise ClusterError(f"--address {address!r}: cannot reach a Ray head there ({e}); start one with "
                           f"`ray start --head` or pass the address it prints") from None


def local_cpus() -> int:
    """The CPUs this process may use: what a local Ray cluster started here gets."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cluster_cpus() -> int:
    """The CPUs of the Ray cluster this process is connected to."""
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


def join_or_start(address: str | None = None, *, num_cpus: int | None = None, dashboard: bool = True,
                  temp_dir: str | None = None, **init_kwargs: Any) -> tuple[bool, str | None]:
    """Reuse the Ray this process is connected to, else join ``address``, else start a local
    cluster (``num_cpus``: default all of :func:`local_cpus`; with the dashboard unless
    ``dashboard`` is false). Returns ``(started, dashboard_url)``: ``started`` is true when this
    call connected or started Ray, so the caller :func:`stop` s it afterwards."""
    import ray

    if ray.is_initialized():
        return False, None
    from vip_ray.interrupts import start_ray

    check_reachable(address)
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": False, **init_kwargs}
    if address is None:
        kwargs.update(num_cpus=num_cpus or local_cpus(), include_dashboard=dashboard, _temp_dir=temp_dir)
    try:
        ctx = start_ray(**kwargs)  # a Ctrl-C during start-up shuts down what it started
    except Exception as e:  # noqa: BLE001 (ray.init raises many kinds: no cluster at "auto", a head that is not Ray)
        where = f"join Ray at {address!r}" if address else "start a local Ray cluster"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]  # Ray's messages run to many lines
        raise ClusterError(f"--address {address!r}: cannot {where}: {first}" if address else
                           f"cannot {where}: {first}") from None
    return True, getattr(ctx, "dashboard_url", None) or None


def stop() -> None:
    """Disconnect from (and, if this process started it, stop) the Ray cluster."""
    import ray

    ray.shutdown()


__all__ = ["ClusterError", "check_reachable", "cluster_cpus", "join_or_start", "local_cpus", "stop"]
