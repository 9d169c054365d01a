"""How a request is served (strategy, aggregation rule, top-k) and which variant runs where
(placement)."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from vip_ray.scenario.schema.base import _custom, _Model

_DEFAULT_AGGREGATOR = {"vp": "vp", "vip": "vip"}


class StrategySpec(_Model):
    """How a request is served.

    * ``name`` — a registered strategy (``vip-sim strategies`` lists them): ``vp``, ``vip``,
      ``single``, ``mp``, ``cp`` and those of later releases; checked against the registry when
      the scenario runs.
    * ``aggregator`` — a name in ``vip_ray.core.aggregation.AGGREGATORS`` (``vp``, ``vip``,
      ``majority``, ``first``, ``cp``, or user-registered; ``vip-sim names`` lists them); default ``vp`` for vp, ``vip`` for vip, none otherwise.
    * ``k`` — top-k compression of replies (VP §III-C): an int ≥ 1 or ``all`` (full vector). Default 2.
    * ``alpha`` — VP eq. 1 exponent α of the depth-multiplier scaling (default 1.0).
    * ``options`` — per-strategy settings, ``{strategy name: {key: value}}``, validated by that
      strategy (e.g. ``mp: {on_failure: stall}``); every strategy finds its own there, so
      ``vip-sim compare`` runs several strategies from one scenario.
    """

    name: str = "vp"
    aggregator: str | None = None
    k: int | Literal["all"] = 2
    alpha: Annotated[float, Field(allow_inf_nan=False)] = 1.0
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # the registry checks the name when the scenario runs (its answer lists the strategies)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", v):
            raise _custom("bad_strategy_name", f"{v!r} is not a strategy name; names are lowercase letters, "
                                               f"digits and _ (e.g. vp, vip, single); `vip-sim strategies` lists them")
        return v

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, v: Any) -> Any:
        if v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        if isinstance(v, float) and v.is_integer() and v >= 1:
            return int(v)
        raise _custom("bad_k", f"expected an integer >= 1 or 'all', got {v!r}")

    @field_validator("aggregator")
    @classmethod
    def _aggregator(cls, v: str | None) -> str | None:
        if v is not None:
            from vip_ray.core.aggregation import (
                AGGREGATORS,  # numpy: imported when a scenario names a rule
            )
            from vip_ray.core.registry import UnknownName

            try:
                AGGREGATORS.check(v)
            except UnknownName as e:
                raise _custom("unknown_aggregator", str(e)) from None
        return v

    @model_validator(mode="after")
    def _default_aggregator(self) -> StrategySpec:
        if self.aggregator is None:
            self.aggregator = _DEFAULT_AGGREGATOR.get(self.name)
        return self

    @property
    def top_k(self) -> int | None:
        """k as the aggregation module takes it (None = all)."""
        return None if self.k == "all" else int(self.k)


class Placement(_Model):
    """Which variant runs where.

    * ``policy`` — a name in ``vip_ray.placement.PLACEMENTS`` (``vip-sim names placements`` lists
      them; checked when the scenario runs, before any pool is opened); default
      ``diverse`` when every device computes alike, else ``capacity``.
    * ``params`` — keyword arguments for the policy.
    * ``dynamic`` — re-place variants when device availability changes (VIP's dynamic variant
      management). Default false.
    """

    policy: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    dynamic: bool = False
