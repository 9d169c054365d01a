"""The Serve engine's runners for the deployments that are not fan-outs, by shape
(:data:`vip_ray.core.deployment.SHAPES`): ``chain`` (:mod:`.chain`) and ``pipeline``
(:mod:`.pipeline`). A runner is built for a deployment, :meth:`start`\\ ed once, kept up while
``same(dep)`` (a new seed of the same strategy), and ``replicate(dep, replication)`` returns
``{"requests", "devices", "meta", "tables", "extra"}``."""
from __future__ import annotations


def _chain(*args, **kwargs):
    from vip_ray.serve.chain import ChainRun

    return ChainRun(*args, **kwargs)


def _pipeline(*args, **kwargs):
    from vip_ray.serve.pipeline import PipelineRun

    return PipelineRun(*args, **kwargs)


STAGED = {"chain": _chain, "pipeline": _pipeline}
