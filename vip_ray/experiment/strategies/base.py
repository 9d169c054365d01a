"""The strategy contract: how one request is served, from the scenario to per-request rows.

A strategy is a class registered under a name (:func:`register_strategy`). ``vip-sim run``
uses the scenario's ``strategy.name``; ``vip-sim compare`` runs several on the same scenario.

Extension hooks (override in a subclass):

* ``Options`` — a pydantic model for ``strategy.options.<name>`` (validated before any pool is
  opened; errors name the key path).
* ``prepare(ctx)`` — once per run: open or build extra pools, profile models, check that the
  scenario suits the strategy (raise :class:`~vip_ray.scenario.ScenarioError`).
* ``replication(ctx, seed=, replication=, engine=, chunk_requests=)`` — a generator that yields
  per-request DataFrames (the columns of :data:`REQUEST_COLUMNS`, plus any of its own) and
  *returns* ``(devices DataFrame, meta dict)``; wrap it in :class:`Replication`.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Generator, Iterator

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from vip_ray.pool import Pool
from vip_ray.scenario import Scenario, ScenarioError
from vip_ray.scenario.schema import format_validation_error

#: Columns every strategy's request table has (strategies may add their own after them).
REQUEST_COLUMNS = ("replication", "seed", "request_id", "arrival_s", "finish_s", "latency_s", "answered",
                   "deadline_met", "fallback", "n_responders", "responders", "sample", "label", "prediction",
                   "correct_top1", "correct_topM", "bytes_down", "bytes_up", "strategy", "engine")
#: Columns every strategy's device table has.
DEVICE_COLUMNS = ("replication", "device", "group", "role", "variant", "service_ms", "macs_per_request",
                  "jobs", "served", "busy_s", "available_s", "preempted", "dropped", "crashed",
                  "available_fraction", "utilization")


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class Context:
    """What a strategy gets: the scenario (already resolved), its pool, where it came from."""

    scenario: Scenario
    pool: Pool
    file: str = "<scenario>"
    log: Callable[[str], None] = print
    cache: dict[str, Any] = field(default_factory=dict)   # per-run state a strategy keeps between replications


class Replication:
    """Iterate for the request chunks; afterwards ``devices`` and ``meta`` are set."""

    def __init__(self, gen: Generator[pd.DataFrame, None, tuple[pd.DataFrame, dict]]):
        self._gen = gen
        self.devices: pd.DataFrame | None = None
        self.meta: dict[str, Any] = {}

    def __iter__(self) -> Iterator[pd.DataFrame]:
        self.devices, self.meta = yield from self._gen


class Strategy:
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    engines: ClassVar[tuple[str, ...]] = ("sim",)    # scenario engines it runs on
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

    def prepare(self, ctx: Context) -> None:
        """Once per run, before the first replication."""

    def replication(self, ctx: Context, *, seed: int, replication: int, engine: str,
                    chunk_requests: int) -> Replication:
        raise NotImplementedError


STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(name: str):
    """Class decorator: ``@register_strategy("mine") class Mine(Strategy): ...``."""

    def wrap(cls: type[Strategy]) -> type[Strategy]:
        if not issubclass(cls, Strategy):
            raise TypeError(f"{cls.__name__} must derive from vip_ray.experiment.strategies.Strategy")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return wrap


def get_strategy(name: str, *, file: str | None = None) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        near = difflib.get_close_matches(str(name), STRATEGIES, 1)
        hint = (f" (names are lowercase: did you mean {str(name).lower()!r}?)" if str(name).lower() in STRATEGIES
                else f" (did you mean {near[0]!r}?)" if near else "")
        raise ScenarioError(f"{file or '<scenario>'}: strategy.name: unknown strategy {name!r}{hint}; allowed: "
                            f"{', '.join(sorted(STRATEGIES))}", file=file,
                            problems=[("strategy.name", f"unknown strategy {name!r}")]) from None


def with_strategy(scenario: Scenario, name: str) -> Scenario:
    """The scenario served by strategy ``name`` (its options, k and alpha kept; aggregator reset
    to that strategy's default unless the scenario already uses ``name``)."""
    if scenario.strategy.name == name:
        return scenario
    spec = scenario.strategy.model_copy(update={"name": name, "aggregator": None})
    spec = type(spec).model_validate(spec.model_dump())  # re-run the default-aggregator rule
    return scenario.model_copy(update={"strategy": spec})
