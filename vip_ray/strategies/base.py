"""The strategy contract: from the scenario to what an engine runs.

A strategy is a class registered under a name (``STRATEGIES``, filled in one place:
``vip_ray/strategies/__init__.py``; users add theirs with :func:`register_strategy`).
``vip-sim run`` uses the scenario's ``strategy.name``; ``vip-sim compare`` runs several.

What a strategy declares and gives (override in a subclass):

* ``kind`` — the shape of its deployments: ``fanout``, ``chain`` or ``pipeline``
  (:mod:`vip_ray.core.deployment`).
* ``engines`` — the engine families it runs on (``sim``, ``serve``): a promise that
  ``tests/test_engines.py`` keeps by running every strategy on every engine it declares.
* ``multi_master`` — the engine families that run it with several masters (``masters:``).
* ``Options`` — a pydantic model for ``strategy.options.<name>`` (validated before any pool is
  opened; errors name the key path).
* ``prepare(ctx)`` — once per run: open extra pools (``ctx.open_pool``), profile models, check
  that the scenario suits the strategy (raise :class:`~vip_ray.scenario.ScenarioError`).
* ``deploy(ctx, seed) -> Deployment`` — what runs where for one replication; engines consume
  only that.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from vip_ray.core.deployment import Deployment
from vip_ray.core.registry import Registry, UnknownName
from vip_ray.core.tables import DEVICE_COLUMNS, REQUEST_COLUMNS  # noqa: F401  (re-exported)
from vip_ray.pool import Pool
from vip_ray.scenario import Scenario, ScenarioError
from vip_ray.scenario.schema import format_validation_error


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class Context:
    """What a strategy gets: the scenario (already resolved), its pool, where it came from, and
    ``open_pool(name)`` for the extra pools it needs (trained on first use by the caller)."""

    scenario: Scenario
    pool: Pool
    file: str = "<scenario>"
    log: Callable[[str], None] = print
    cache: dict[str, Any] = field(default_factory=dict)   # per-run state kept between replications
    open_pool: Callable[[str], Pool] | None = None


class Strategy:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    kind: ClassVar[str] = "fanout"
    Options: ClassVar[type[BaseModel]] = NoOptions
    engines: ClassVar[tuple[str, ...]] = ("sim",)    # engine families it runs on
    #: the engine families that run its multi-master form (a scenario with ``masters:``); none by default
    multi_master: ClassVar[tuple[str, ...]] = ()
    uses_variants: ClassVar[bool] = True             # deploys the scenario pool's variants (checked on load)

    def __init__(self, options: BaseModel):
        self.options = options

    @classmethod
    def from_scenario(cls, scenario: Scenario, file: str | None = None) -> "Strategy":
        raw = scenario.strategy.options.get(cls.name) or {}
        try:
            opts = cls.Options.model_validate(raw)
        except ValidationError as e:
            err = format_validation_error(e, file=file)
            prefix = f"strategy.options.{cls.name}"
            problems = [(f"{prefix}.{p}" if p else prefix, m) for p, m in err.problems]
            lines = [f"{file or '<scenario>'}: {p}: {m}" for p, m in problems]
            raise ScenarioError("\n".join(lines), file=file, problems=problems) from None
        return cls(opts)

    def refuses(self, scenario: Scenario) -> str | None:
        """Why this strategy cannot run ``scenario`` at all, found without a pool (None: it may
        run). ``vip-sim compare`` asks it of every condition before a pool is opened or trained,
        and skips, with a note, the conditions a strategy refuses."""
        return None

    def prepare(self, ctx: Context) -> None:
        """Once per run, before the first replication."""

    def deploy(self, ctx: Context, seed: int) -> Deployment:
        """What runs where for the replication with ``seed``."""
        raise NotImplementedError(f"strategy {self.name!r} does not implement deploy(ctx, seed)")


STRATEGIES: Registry = Registry("strategy")


def register_strategy(name: str):
    """Class decorator: ``@register_strategy("mine") class Mine(Strategy): ...``."""

    def wrap(cls: type[Strategy]) -> type[Strategy]:
        if not issubclass(cls, Strategy):
            raise TypeError(f"{cls.__name__} must derive from vip_ray.strategies.Strategy")
        cls.name = name
        STRATEGIES.register(name, cls)
        return cls

    return wrap


def get_strategy(name: str, *, file: str | None = None) -> type[Strategy]:
    try:
        return STRATEGIES.get(name)
    except UnknownName:
        near = difflib.get_close_matches(str(name), STRATEGIES.names(), 1)
        hint = (f" (names are lowercase: did you mean {str(name).lower()!r}?)" if str(name).lower() in STRATEGIES
                else f" (did you mean {near[0]!r}?)" if near else "")
        raise ScenarioError(f"{file or '<scenario>'}: strategy.name: unknown strategy {name!r}{hint}; allowed: "
                            f"{', '.join(STRATEGIES.names())}", file=file,
                            problems=[("strategy.name", f"unknown strategy {name!r}")]) from None


def runs_on(family: str) -> list[str]:
    """The strategies that declare the engine family ``family``."""
    return STRATEGIES.where(lambda cls: family in cls.engines)


def with_strategy(scenario: Scenario, name: str) -> Scenario:
    """The scenario served by strategy ``name`` (its options, k and alpha kept; aggregator reset
    to that strategy's default unless the scenario already uses ``name``)."""
    if scenario.strategy.name == name:
        return scenario
    spec = scenario.strategy.model_copy(update={"name": name, "aggregator": None})
    spec = type(spec).model_validate(spec.model_dump())  # re-run the default-aggregator rule
    return scenario.model_copy(update={"strategy": spec})
