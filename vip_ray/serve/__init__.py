"""Live emulation on Ray Serve: ``vip-sim run FILE --engine serve``.

The scenario's devices become emulated edge devices hosted by device-group deployments
(:mod:`.device`), the master is the ingress deployment (:mod:`.ingress`; HTTP ``POST /predict``,
``GET /health``), a load generator replays the workload in real time (:mod:`.loadgen`), and the
results land in the simulator's tables (:mod:`.engine`). Placement, aggregation, the link
model and the random streams are the simulator's own code (``vip_ray.placement``,
``vip_ray.aggregation``, ``vip_ray.netmodel``, ``vip_ray.streams``); this package never imports
``vip_ray.sim`` (and the simulator never imports it).

    from vip_ray.serve import ServeEmulation, ServeOptions, build_config, keep_serving, run_serve
"""
from vip_ray.serve.config import DeployError, EmulationConfig, ServeOptions, build_config

__all__ = ["DeployError", "EmulationConfig", "ServeEmulation", "ServeOptions", "build_config", "keep_serving",
           "run_serve"]


def __getattr__(name):  # Ray Serve and torch load only when an emulation is started
    if name == "ServeEmulation":
        from vip_ray.serve.app import ServeEmulation

        return ServeEmulation
    if name in ("run_serve", "keep_serving"):
        from vip_ray.serve import engine

        return getattr(engine, name)
    raise AttributeError(name)
