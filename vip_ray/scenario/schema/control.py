"""The scenario key ``control: {policy: NAME, ...}``: the online controller at the master
(:mod:`vip_ray.control`) and its options, one model per policy. Unknown keys are refused with
the policy's allowed ones; an unknown policy with the registered names."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import Field, PlainValidator, field_validator, model_validator

from vip_ray.scenario.schema.base import NonNegFloat, PositiveInt, _custom, _Model

Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


class _Control(_Model):
    """Every policy: ``anytime`` — also answer early by the margin rule (:mod:`vip_ray.control.anytime`);
    ``anytime_scale`` — the part of the missing devices' largest possible swing the margin must
    exceed (1: the answer provably cannot change; below 1 it may, rarely); ``min_replies`` —
    replies needed before an early answer. ``adaptive_k`` — pick each device's top-k from its
    measured up-link bandwidth (:mod:`vip_ray.control.topk`): the largest k in [``k_min``,
    ``k_max``] (``k_max`` None: ``strategy.k``) whose reply serialises within ``k_budget`` × the
    deadline."""

    anytime: bool = False
    anytime_scale: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 1.0
    min_replies: PositiveInt = 1
    adaptive_k: bool = False
    k_budget: Fraction = 0.1
    k_min: PositiveInt = 1
    k_max: Optional[PositiveInt] = None

    @model_validator(mode="after")
    def _k_range(self) -> Any:
        if self.k_max is not None and self.k_min > self.k_max:
            raise _custom("bad_k_range", f"k_min ({self.k_min}) must be <= k_max ({self.k_max})", sub="k_min")
        return self


class StaticControl(_Control):
    """Today's master: waits for every placed device it does not know is down, until the deadline."""

    policy: Literal["static"] = "static"


class AnytimeControl(_Control):
    """``static`` with the margin rule on (``anytime`` is implied)."""

    policy: Literal["anytime"] = "anytime"
    anytime: bool = True


class OracleControl(_Control):
    """Re-places the variants at the availability changes scheduled in advance (knowledge no real
    master has): an upper bound. Simulator only."""

    policy: Literal["oracle"] = "oracle"


class ReactiveControl(_Control):
    """Health plus latency EWMA: stops waiting for a device after ``misses`` timeouts in a row, or
    while its reply-latency EWMA (weight ``ewma_alpha``) exceeds ``slow_fraction`` × the
    deadline; waits for it again once it answers. ``redeploy`` — also copy the variant of a
    device out of the wait set for ``redeploy_after_s`` to the healthy worker running the least
    accurate one, costing the weights' transfer over its link plus ``load_s``."""

    policy: Literal["reactive"] = "reactive"
    misses: PositiveInt = 1
    ewma_alpha: Fraction = 0.2
    slow_fraction: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.5
    redeploy: bool = False
    redeploy_after_s: NonNegFloat = 2.0
    load_s: NonNegFloat = 0.2


class BanditControl(_Control):
    """UCB1 over each worker's variants in epochs of ``interval_s``: reward accuracy × replies in
    time − ``latency_weight`` × mean latency / deadline; ``exploration`` the UCB constant; a change
    re-deploys (weights' transfer plus ``load_s``)."""

    policy: Literal["bandit"] = "bandit"
    exploration: NonNegFloat = 0.5
    latency_weight: NonNegFloat = 0.1
    interval_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    load_s: NonNegFloat = 0.2


class LearnedControl(_Control):
    """Waits for the devices a policy trained in ``vip_ray.control.env`` learned to wait for:
    ``file`` — its JSON ``{"waits": {device: probability}}`` (``vip_ray.control.learned.save_waits``);
    ``threshold`` — the probability from which the master waits for a device."""

    policy: Literal["learned"] = "learned"
    file: str
    threshold: Fraction = 0.5

    @field_validator("file")
    @classmethod
    def _readable(cls, v: Any) -> Any:   # before any run starts: the file exists and holds the waits
        if v is None:
            return v
        import json
        from pathlib import Path

        try:
            waits = json.loads(Path(v).read_text())["waits"]
            ok = isinstance(waits, dict) and all(isinstance(p, (int, float)) and 0 <= p <= 1 for p in waits.values())
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise _custom("learned_file", f"{v!r} is not a readable JSON {{\"waits\": {{device: probability}}}} "
                                          f"({type(e).__name__})") from None
        if not ok:
            raise _custom("learned_file", f"{v!r}: waits must map device names to probabilities in [0, 1]")
        return v


CONTROL_MODELS = {m.model_fields["policy"].default: m
                  for m in (StaticControl, AnytimeControl, OracleControl, ReactiveControl, BanditControl,
                            LearnedControl)}


def _model(name: str) -> Any:
    """The options model of policy ``name``: a built-in's, or for a learned policy registered at
    run time (``vip_ray.control.learned.register_learned``) ``learned``'s without the file."""
    if not isinstance(name, str):
        return None
    if name in CONTROL_MODELS:
        return CONTROL_MODELS[name]
    from vip_ray.control import POLICIES

    if name not in POLICIES.names() or not getattr(POLICIES.get(name), "learned", False):
        return None
    if name not in _LEARNED_MODELS:
        from pydantic import create_model

        _LEARNED_MODELS[name] = create_model(f"LearnedControl_{name}", __base__=LearnedControl,
                                             policy=(Literal[name], name), file=(Optional[str], None))
    return _LEARNED_MODELS[name]


_LEARNED_MODELS: dict[str, Any] = {}


def _known_policy(data: Any) -> Any:
    if data is None:
        return {"policy": "static"}
    if isinstance(data, str):   # ``control: reactive`` is short for ``control: {policy: reactive}``
        data = {"policy": data}
    if isinstance(data, dict):
        from vip_ray.control import POLICIES   # the one registry of policy names (imports nothing heavy)

        name = data.get("policy", "static")
        if _model(name) is None:
            allowed = [n for n in POLICIES.names() if _model(n) is not None]
            raise _custom("unknown_policy", f"unknown policy {name!r}; allowed: {', '.join(allowed)}", sub="policy")
        data = {**data, "policy": name}
    return data


def _control(data: Any) -> _Control:
    """The policy's model validated on its own (key paths read ``control.misses``)."""
    if isinstance(data, _Control):
        return data
    data = _known_policy(data)
    return _model(data["policy"]).model_validate(data)


#: one of CONTROL_MODELS (typed Any: the model serialises as its own class)
Control = Annotated[Any, PlainValidator(_control)]
