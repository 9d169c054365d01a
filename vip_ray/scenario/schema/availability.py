"""When a device can serve: availability processes (always, on/off cycle stealing, trace,
crash, MTBF) and stragglers."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from vip_ray.scenario.schema.base import (
    NonNegFloat,
    PositiveFloat,
    Probability,
    _custom,
    _Model,
)
from vip_ray.scenario.schema.trace_refs import _load_trace


class AlwaysAvailable(_Model):
    """Always available."""

    kind: Literal["always"] = "always"

    def stationary(self) -> float:
        return 1.0


class OnOffAvailability(_Model):
    """Cycle stealing: the owner's own work arrives in busy periods that preempt inference.

    Free and busy periods alternate, starting free at t = 0; lengths are i.i.d. with means
    ``free_mean_s`` / ``busy_mean_s`` (seconds), ``exponential`` or ``weibull`` (shape
    ``weibull_shape``, scaled to the mean; required for weibull). ``mode``: ``resume`` pauses the
    job in service and resumes it when free again; ``drop`` loses it. Queued jobs wait either way.
    """

    kind: Literal["onoff"]
    busy_mean_s: PositiveFloat
    free_mean_s: PositiveFloat
    distribution: Literal["exponential", "weibull"] = "exponential"
    weibull_shape: PositiveFloat | None = None
    mode: Literal["resume", "drop"] = "resume"

    @model_validator(mode="after")
    def _shape(self) -> OnOffAvailability:
        if self.distribution == "weibull" and self.weibull_shape is None:
            raise _custom("missing_shape", "weibull_shape is required when distribution is weibull "
                                           "(e.g. 0.7 for heavy-tailed busy periods)", sub="weibull_shape")
        return self

    def stationary(self) -> float:
        """Long-run fraction of time free."""
        return self.free_mean_s / (self.free_mean_s + self.busy_mean_s)


class TraceAvailability(_Model):
    """Unavailable during the listed ``[start_s, end_s)`` intervals, available otherwise.

    ``file``: CSV with columns ``start_s,end_s`` (next to the scenario or in ``sim/traces``);
    or inline ``intervals: [[start_s, end_s], ...]`` (sorted, non-overlapping). If both are
    given (as ``resolved()`` writes them) ``intervals`` win and ``file`` is provenance.
    ``mode`` as for on/off.
    """

    kind: Literal["trace"]
    file: str | None = None
    intervals: list[tuple[NonNegFloat, NonNegFloat]] = Field(default_factory=list)
    mode: Literal["resume", "drop"] = "resume"

    @model_validator(mode="after")
    def _fill(self, info: ValidationInfo) -> TraceAvailability:
        if not self.intervals:
            if self.file is None:
                raise _custom("trace_error", "availability kind 'trace' needs file or intervals "
                                             "[[start_s, end_s], ...]", sub="file")
            self.intervals = _load_trace("availability", self.file, info, "file")
        for i, (a, b) in enumerate(self.intervals):
            if not b > a:
                raise _custom("trace_error", f"end_s must be > start_s, got [{a}, {b}]", sub=f"intervals[{i}]")
            if i and a < self.intervals[i - 1][1]:
                raise _custom("trace_error", "intervals must be sorted and non-overlapping",
                              sub=f"intervals[{i}]")
        return self

    def stationary(self) -> float:
        return 1.0


class CrashAvailability(_Model):
    """Down for good from ``at_s`` seconds on: its queue and the job in service are lost."""

    kind: Literal["crash"]
    at_s: NonNegFloat

    def stationary(self) -> float:
        return 1.0


class MtbfAvailability(_Model):
    """Failures and repairs: exponential up times (mean ``mtbf_s``) and down times (mean
    ``mttr_s``), starting up; a failure loses the queue and the job in service."""

    kind: Literal["mtbf"]
    mtbf_s: PositiveFloat
    mttr_s: PositiveFloat

    def stationary(self) -> float:
        """Long-run fraction of time up."""
        return self.mtbf_s / (self.mtbf_s + self.mttr_s)


Availability = Annotated[
    AlwaysAvailable | OnOffAvailability | TraceAvailability | CrashAvailability | MtbfAvailability,
    Field(discriminator="kind"),
]


def _availability_shorthand(value: Any) -> Any:
    """``availability: always`` is short for ``{kind: always}``."""
    return {"kind": value} if isinstance(value, str) else value


class Straggler(_Model):
    """With probability ``prob`` a job runs ``factor`` (≥ 1) times slower."""

    prob: Probability = 0.0
    factor: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1.0
