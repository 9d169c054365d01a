"""The engine contract and the one engine registry.

An engine turns a :class:`~vip_ray.core.deployment.Deployment` into result tables, one
replication at a time. The simulator's kernels (``fast``, ``jit``, ``loop``, ``numpy``, ``reference``)
and the live Ray Serve emulation (``serve``) are engines alike; a long-lived engine (Serve) is
opened once and replicated per seed::

    with make_engine("serve", options) as engine:
        for seed in seeds:
            rep = engine.replicate(strategy.deploy(ctx, seed), replication=i)
            for rows in rep: ...          # request table chunks
            rep.devices, rep.meta, rep.tables

``ENGINES`` maps a name to ``"module:factory"`` (imported on first use, so listing engines for
``--help`` loads neither SimPy's kernels nor Ray). Each name belongs to a *family* (``sim`` or
``serve``): a strategy declares the families it runs on.
"""
from __future__ import annotations

from typing import Any, Generator, Iterator

from vip_ray.core.deployment import Deployment
from vip_ray.core.registry import Registry

ENGINES: Registry = Registry("engine")
#: engine family -> its engine names (a strategy's ``engines`` lists families)
FAMILIES: dict[str, tuple[str, ...]] = {"sim": ("fast", "jit", "loop", "numpy", "reference"), "serve": ("serve",)}
for _name in FAMILIES["sim"]:
    ENGINES.register(_name, "vip_ray.sim.runner:SimEngine")
ENGINES.register("serve", "vip_ray.serve.engine:ServeEngine")


def register_engine(name: str, factory: Any, family: str = "sim") -> None:
    """Add an engine: ``factory(name, options) -> Engine`` (or a ``"module:attr"`` string)."""
    ENGINES.register(name, factory)
    FAMILIES[family] = tuple(dict.fromkeys((*FAMILIES.get(family, ()), name)))


def engine_family(name: str) -> str:
    for family, names in FAMILIES.items():
        if name in names:
            return family
    raise KeyError(name)


class Replication:
    """Iterate for the request-table chunks; afterwards ``devices`` (the device table), ``meta``
    (summary fields) and ``tables`` (engine-specific extra tables: ``{file stem: DataFrame}``)."""

    def __init__(self, gen: Generator[Any, None, tuple]):
        self._gen = gen
        self.devices = None
        self.meta: dict[str, Any] = {}
        self.tables: dict[str, Any] = {}

    def __iter__(self) -> Iterator[Any]:
        out = yield from self._gen
        self.devices, self.meta = out[0], out[1]
        if len(out) > 2:
            self.tables = out[2]


class Engine:
    """Base class. ``replicate`` is the one method every engine has; ``open`` / ``close`` bracket
    a long-lived engine's resources (Ray, Serve apps); ``describe`` goes into ``config.yaml``."""

    name: str = ""
    family: str = ""

    def __init__(self, name: str, options: Any = None):
        self.name, self.options = name, options

    def open(self) -> "Engine":
        return self

    def close(self) -> None:
        pass

    def __enter__(self) -> "Engine":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def replicate(self, dep: Deployment, *, replication: int, chunk_requests: int = 200_000) -> Replication:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The engine's settings and versions for ``config.yaml``."""
        return {"name": self.name, "family": self.family}

    def run_summary(self) -> dict[str, Any]:
        """Engine-specific fields for ``summary.json`` after all replications."""
        return {}


def make_engine(name: str, options: Any = None, *, log: Any = None) -> Engine:
    """Engine ``name`` with ``options``; ``log`` (a ``str -> None``) gets what it says while it runs
    (the command's console: with ``--json`` that is stderr, never stdout)."""
    eng = ENGINES.get(name)(name, options)
    if log is not None:
        eng.log = log
    return eng
