"""Build the Serve application of an emulation and run it: :class:`ServeEmulation`.

    with ServeEmulation(cfg, weights) as emu:       # Ray (if not running) + Serve + the app
        emu.http_url                                 # POST {url}/predict, GET {url}/health
        replay = emu.replicate(seed=0)               # the scenario's workload in real time
        emu.kill_device("tv")                        # fault injection: ray.kill of its replica

Deployments: one ``master`` (:class:`~vip_ray.serve.ingress.Ingress`, HTTP ingress) and one per
device group (:class:`~vip_ray.serve.device.DeviceGroup`), all with ``num_cpus: 0`` (a replica
asking for a whole CPU would never start on a small machine) plus the group's custom resources.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Any, Callable

from vip_ray.serve.config import DeployError, EmulationConfig
from vip_ray.serve.device import DeviceGroup
from vip_ray.serve.ingress import Ingress

HEALTH_CHECK_PERIOD_S = 1.0    # a killed replica is replaced in ≈ 3–4 s (≈ 8 s with Serve's default 10 s)
MAX_ONGOING = 10_000           # every request waits up to its deadline: Serve's default of 5 would queue them


def build_app(cfg: EmulationConfig, weights: dict[int, bytes]):
    """The Serve application: device groups (each with the weights of the variants it runs) and the master."""
    from ray import serve

    # Serve's per-call access log line costs ≈ 0.1 ms of each replica's event loop per call (a
    # request is one call per device group): off unless asked for; the metrics count the requests
    logs = {"enable_access_log": bool(cfg.options.access_log)}
    groups = []
    for gi, g in enumerate(cfg.groups):
        need = sorted({v for i in g.devices for v in cfg.devices[i].placed_variants()})
        actor = {"num_cpus": 0}
        if g.ray_resources:
            actor["resources"] = dict(g.ray_resources)
        dep = serve.deployment(DeviceGroup, name=g.name, num_replicas=1, ray_actor_options=actor,
                               max_ongoing_requests=MAX_ONGOING, health_check_period_s=HEALTH_CHECK_PERIOD_S,
                               health_check_timeout_s=10.0, graceful_shutdown_timeout_s=1.0, logging_config=logs)
        groups.append(dep.bind(cfg, gi, {v: weights[v] for v in need}))
    master = serve.deployment(Ingress, name="master", num_replicas=1, ray_actor_options={"num_cpus": 0},
                              max_ongoing_requests=MAX_ONGOING, graceful_shutdown_timeout_s=1.0, logging_config=logs)
    return master.bind(cfg, *groups)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_resources(cfg: EmulationConfig) -> None:
    """Every pinned group needs a live node with its custom resources (else its replica would
    wait forever and the deployment would never finish)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for g in cfg.groups:
        if not g.ray_resources:
            continue
        if not any(all(n["Resources"].get(k, 0.0) >= v for k, v in g.ray_resources.items()) for n in nodes):
            have = sorted({k for n in nodes for k in n["Resources"]
                           if not k.startswith("node:") and k not in ("CPU", "GPU", "memory", "object_store_memory")})
            where = ", ".join(f"devices[{i}] ({cfg.devices[i].name})" for i in g.devices)
            raise DeployError(f"{where}: ray_resources {g.ray_resources} are offered by no node of the Ray cluster; "
                                f"custom resources on its nodes: {', '.join(have) or '(none)'} (start a node with "
                                f"ray start --resources '{{\"{next(iter(g.ray_resources))}\": 1}}')")


class ServeEmulation:
    """Ray + Serve + the emulation's app, started on enter and taken down on exit.

    Joins a running Ray (``ray.is_initialized()``, or ``options.address``); else starts a local
    one and shuts it down afterwards. ``local_testing`` runs the app in-process with Serve's
    local testing mode (no HTTP, no replicas to kill: device failures are emulated in place)."""

    def __init__(self, cfg: EmulationConfig, weights: dict[int, bytes], *, local_testing: bool = False,
                 log: Callable[[str], None] = print):
        self.cfg = cfg
        self.weights = weights
        self.local_testing = local_testing
        self.log = log
        self.own_ray = False
        self.handle = None
        self.http_port: int | None = None
        self.dashboard_url: str | None = None

    # -- lifecycle --------------------------------------------------------------------------------------
    def __enter__(self) -> "ServeEmulation":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        import ray
        from ray import serve

        opt = self.cfg.options
        app = build_app(self.cfg, self.weights)
        if self.local_testing:
            self.handle = serve.run(app, name=self.cfg.app, _local_testing_mode=True)
            return
        if not ray.is_initialized():
            self.dashboard_url = start_ray_for(opt)
            self.own_ray = True
        check_resources(self.cfg)
        self.http_port = start_serve(opt)
        try:  # Serve's public API: returns once the app is running
            self.handle = serve.run(app, blocking=False, name=self.cfg.app, route_prefix=opt.route_prefix)
        except Exception as e:  # e.g. the route prefix is another app's on a shared cluster
            cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise DeployError(f"Serve could not deploy app {self.cfg.app!r} at route prefix {opt.route_prefix!r}: "
                              f"{cause} (another prefix: --route-prefix /mine)") from None

    def stop(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        from ray import serve

        if not self.local_testing and self.handle is not None:
            try:
                serve.delete(self.cfg.app)
            except Exception as e:  # taking down the cluster below removes it anyway
                self.log(f"[vip_ray] could not delete Serve app {self.cfg.app!r}: {e}")
        self.handle = None
        if self.own_ray:
            self.own_ray = False
            stop_ray()

    # -- use ----------------------------------------------------------------------------------------------
    @property
    def http_url(self) -> str | None:
        if self.http_port is None:
            return None
        host = self.cfg.options.http_host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.http_port}" + \
            self.cfg.options.route_prefix.rstrip("/")

    def replicate(self, seed: int, *, images, progress: Callable[[int], None] | None = None, lead_s: float = 1.0,
                  drain_s: float | None = None, workload=None, on_start: Callable | None = None):
        """Replay the scenario's workload once (real time) with ``seed``; see :class:`LoadGenerator`."""
        from vip_ray.serve.loadgen import LoadGenerator

        gen = LoadGenerator(self.handle, self.cfg, images)
        return asyncio.run(gen.replication(seed, progress=progress, lead_s=lead_s, drain_s=drain_s,
                                           workload=workload, on_start=on_start))

    def health(self) -> dict:
        return self.handle.health.remote().result()

    def group_info(self, device: str) -> dict:
        from ray import serve

        gi = self._group(device)
        return serve.get_deployment_handle(self.cfg.groups[gi].name, self.cfg.app).state.remote().result()

    def kill_device(self, device: str) -> dict:
        """Kill the replica that hosts ``device`` (``ray.kill``); Serve's health checks replace it.
        Every device of that replica goes down with it (failure-prone devices have their own)."""
        import ray

        if self.local_testing:
            raise RuntimeError("kill_device needs real replicas (not Serve's local testing mode)")
        info = self.group_info(device)
        ray.kill(ray.get_actor(info["actor"], namespace="serve"), no_restart=True)
        return info

    def wait_replaced(self, device: str, incarnation: str, timeout_s: float = 300.0) -> float:
        """Wait (at most ``timeout_s``) until the replica hosting ``device`` is a new incarnation
        that answers; return the seconds waited. Raises ``TimeoutError`` past the bound."""
        import time

        t0 = time.monotonic()
        while True:
            try:
                if self.group_info(device)["incarnation"] != incarnation:
                    return time.monotonic() - t0
            except Exception:  # noqa: BLE001  (dead or still starting: Serve answers once it is up)
                pass
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"the replica of {device!r} was not replaced within {timeout_s:g} s")
            time.sleep(0.1)

    def _group(self, device: str) -> int:
        for gi, g in enumerate(self.cfg.groups):
            if any(self.cfg.devices[i].name == device for i in g.devices):
                return gi
        raise KeyError(f"no device {device!r}; devices: {', '.join(self.cfg.device_names)}")


def start_ray_for(opt) -> str | None:
    """Join ``opt.address`` or start a local Ray (with the dashboard unless turned off); return
    the dashboard's address."""
    from vip_ray.interrupts import start_ray

    kwargs: dict[str, Any] = {"address": opt.address, "log_to_driver": False}
    if opt.address is None:
        kwargs.update(include_dashboard=opt.dashboard, _temp_dir=opt.ray_temp_dir)
    from vip_ray.core.cluster import check_reachable

    check_reachable(opt.address)   # one line in seconds, not ray.init's minutes of retries
    try:
        ctx = start_ray(**kwargs)  # a Ctrl-C during start-up shuts down what it started
    except Exception as e:  # a bad --address, an unreachable head node
        raise DeployError(f"cannot {'join Ray at ' + repr(opt.address) if opt.address else 'start Ray'}: "
                          f"{e}") from None
    return getattr(ctx, "dashboard_url", None) or None


def stop_ray() -> None:
    """Take down Serve, then the Ray this process started."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def start_serve(opt) -> int | None:
    """Serve with its HTTP proxy where ``opt`` says (an already running Serve keeps its own)."""
    from ray import serve

    serve.start(http_options={"host": opt.http_host, "port": opt.http_port or free_port(opt.http_host)})
    return _serve_http_port()


def _serve_http_port() -> int | None:
    """The port Serve's HTTP proxy listens on (an already running Serve keeps its own)."""
    try:
        from ray.serve.context import _get_global_client

        return int(_get_global_client().http_config.port)
    except Exception:
        return None


class LiveApp:
    """A chain or end–cloud app (:mod:`.chain`, :mod:`.pipeline`) deployed through Serve's public
    API: up on :meth:`start`, deleted on :meth:`stop`; its master speaks the load generator's
    protocol (``replay`` / ``progress`` / ``finish``). Ray is the engine's (already running), or
    none at all in Serve's local testing mode."""

    def __init__(self, app: Any, name: str, options: Any, *, local_testing: bool = False):
        self.app, self.name, self.options, self.local_testing = app, name, options, local_testing
        self.handle = None

    def start(self) -> "LiveApp":
        from ray import serve

        if self.local_testing:
            self.handle = serve.run(self.app, name=self.name, _local_testing_mode=True)
            return self
        start_serve(self.options)
        try:
            self.handle = serve.run(self.app, blocking=False, name=self.name, route_prefix=None)
        except Exception as e:
            cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise DeployError(f"Serve could not deploy app {self.name!r}: {cause}") from None
        return self

    def stop(self) -> None:
        import ray

        if self.handle is None or self.local_testing or not ray.is_initialized():
            self.handle = None
            return
        from ray import serve

        try:
            serve.delete(self.name)
        finally:
            self.handle = None

    def replicate(self, cfg: Any, seed: int, images: Any):
        from vip_ray.serve.loadgen import LoadGenerator

        return asyncio.run(LoadGenerator(self.handle, cfg, images).replication(seed))
