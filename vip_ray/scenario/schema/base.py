"""What every part of the scenario schema stands on: the shared names, the number types with
their bounds, the base model that refuses unknown keys, and ``_custom`` (an error whose message
is final, with the key path it belongs to)."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

# Names shared with the other parts (plain tuples: importing the model registry would pull in
# torch; tests check that they agree with vip_ray.models.registry.FAMILIES)

MODEL_FAMILIES = ("vp", "vp_imagenet", "resnet50_slices", "baseline")
AVAILABILITY_KINDS = ("always", "onoff", "trace", "crash", "mtbf")
ARRIVALS = ("poisson", "periodic", "trace")
FALLBACKS = ("none", "local", "best_effort")
SERVICE_DISTS = ("deterministic", "exponential", "lognormal")
DEFAULT_NETWORK_PROFILE = "smart_home_wifi"
DEFAULT_REQUESTS = 1000
DEFAULT_RATE_HZ = 10.0

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(ge=1)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


def _custom(kind: str, message: str, sub: str | None = None, **ctx: Any) -> PydanticCustomError:
    """An error whose message is final; ``sub`` is a key path appended to the error's location."""
    if sub is not None:
        ctx["sub"] = sub
    safe = message.replace("{", "{{").replace("}", "}}")
    return PydanticCustomError(kind, safe, ctx or None)


def _ctx(info: ValidationInfo | None, key: str) -> Any:
    ctx = getattr(info, "context", None) or {}
    return ctx.get(key)


class _Model(BaseModel):
    """Base: unknown keys are refused with the list of allowed ones."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=False)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    raise _custom("unknown_key", f"unknown key {key!r}; allowed: {', '.join(allowed)}",
                                  sub=str(key))
        return data
