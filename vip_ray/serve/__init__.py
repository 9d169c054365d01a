"""Live emulation on Ray Serve: the ``serve`` engine (``vip-sim run FILE --engine serve``).

A fan-out deployment's devices (:class:`vip_ray.core.deployment.FanOut`, the very world the
simulator runs) become emulated edge devices hosted by device-group deployments (:mod:`.device`;
their state machine in :mod:`.emulated`, tested without Ray), the master is the ingress
deployment (:mod:`.ingress`; HTTP ``POST /predict``, ``GET /health``), a load generator replays
the workload in real time (:mod:`.loadgen`), and :class:`ServeEngine` (:mod:`.engine`) turns the
replay into the simulator's tables. A chain (mp) runs as device deployments that call one another
with the real activations (:mod:`.chain`), an end–cloud pipeline as an end-device and a cloud
deployment (:mod:`.pipeline`); :mod:`.staged` picks the runner by the deployment's shape. This package imports :mod:`vip_ray.core`, never
:mod:`vip_ray.sim` (and the simulator never imports it).

    from vip_ray.serve import ServeEngine, ServeOptions
"""
from vip_ray.serve.config import DeployError, EmulationConfig, ServeOptions, build_config

__all__ = ["DeployError", "EmulationConfig", "ServeEmulation", "ServeEngine", "ServeOptions", "build_config"]


def __getattr__(name):  # Ray Serve and torch load only when an emulation is started
    if name == "ServeEmulation":
        from vip_ray.serve.app import ServeEmulation

        return ServeEmulation
    if name == "ServeEngine":
        from vip_ray.serve.engine import ServeEngine

        return ServeEngine
    raise AttributeError(name)
