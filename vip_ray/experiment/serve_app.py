"""The emulation as a Ray Serve application builder, for Ray users who start apps the Ray way::

    serve run vip_ray.experiment.serve_app:build scenario=scenarios/smart_home.yaml
    serve run vip_ray.experiment.serve_app:build scenario=FILE set="workload.deadline_ms=80;strategy.name=vip"
    serve build vip_ray.experiment.serve_app:build -o config.yaml   # then: serve deploy config.yaml

Arguments (``key=value`` after the import path, or ``args:`` in a Serve config file):
``scenario`` (required), ``set`` (``;``-separated scenario overrides), ``seed`` (default: the
scenario's ``seeds.base``). The app is the one ``vip-sim serve FILE`` starts: the master's
ingress answers ``POST /predict`` and ``GET /health``; no workload is replayed.
"""
from __future__ import annotations

from typing import Any


def build(args: dict[str, Any]):
    from vip_ray.experiment.run import checked_strategy, context, open_pool, refuse_up_front
    from vip_ray.scenario import load_scenario
    from vip_ray.scenario.load import check_pool
    from vip_ray.serve import ServeOptions, build_config
    from vip_ray.serve.app import build_app
    from vip_ray.serve.engine import bank_inputs, pool_weights

    if "scenario" not in args:
        raise ValueError("vip_ray.experiment.serve_app:build needs scenario=FILE (e.g. scenario=scenarios/smart_home.yaml)")
    file = str(args["scenario"])
    overrides = [s.strip() for s in str(args.get("set", "")).split(";") if s.strip()]
    scenario = load_scenario(file, overrides)
    strategy = checked_strategy(scenario, file, "serve")
    refuse_up_front(strategy, scenario, file)
    pool = open_pool(scenario, print)
    check_pool(scenario, pool, file=file, uses_variants=strategy.uses_variants)
    ctx = context(scenario, pool, file=file, log=print)
    strategy.prepare(ctx)
    dep = strategy.deploy(ctx, int(args.get("seed", scenario.seeds.base)))
    images = bank_inputs(pool)
    cfg = build_config(dep, input_shape=images.shape[1:], options=ServeOptions())
    return build_app(cfg, pool_weights(pool, cfg))
