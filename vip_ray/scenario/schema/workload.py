"""Requests: arrivals, how many, the deadline, the fallback, and the frames' temporal correlation."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from vip_ray.scenario.schema.base import (
    DEFAULT_RATE_HZ,
    DEFAULT_REQUESTS,
    PositiveFloat,
    PositiveInt,
    _custom,
    _Model,
)
from vip_ray.scenario.schema.trace_refs import ArrivalTrace

FRAME_PRESETS = {"low": (1.0, 0.0), "medium": (10.0, 0.0), "high": (30.0, 0.5)}


class Frames(_Model):
    """Continuous frames with temporal correlation (COACH Table II): which test sample each
    request carries. Used by the end–cloud strategies (coach, neurosurgeon, dads, spinn, jps);
    the others draw i.i.d. samples.

    * ``correlation`` — ``low`` (random frames: i.i.d. samples), ``medium`` (runs of one class,
      mean 10 frames), ``high`` (runs of one class, mean 30 frames, half the frames a static shot
      repeating the previous sample). Presets for the two keys below.
    * ``run_length_mean`` — mean frames per run of one class (geometric), ≥ 1.
    * ``repeat_prob`` — probability that a frame repeats the previous frame's sample, in [0, 1).
    """

    correlation: Literal["low", "medium", "high"] = "low"
    run_length_mean: Annotated[float, Field(ge=1, allow_inf_nan=False)] | None = None
    repeat_prob: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _preset(self) -> Frames:
        run, rep = FRAME_PRESETS[self.correlation]
        self.run_length_mean = run if self.run_length_mean is None else self.run_length_mean
        self.repeat_prob = rep if self.repeat_prob is None else self.repeat_prob
        return self


class Workload(_Model):
    """Requests.

    * ``arrival`` — ``poisson`` (rate ``rate_hz``, default 10), ``periodic`` (``fps`` frames per
      second, default 10, first at t = 0) or ``trace`` (``trace``: file / inline times, seconds).
    * ``requests`` or ``duration_s`` — at most one; default 1000 requests (for a trace: the
      whole trace).
    * ``deadline_ms`` — the master waits this long after arrival, then aggregates (default 100).
    * ``input_bytes`` — bytes multicast per request; default (None) the pool's input size:
      C×H×W uint8 bytes of its data set.
    * ``fallback`` — when no reply arrived by the deadline: ``none`` (no answer), ``local``
      (wait for the master's own local variant; default), ``best_effort`` (wait for the first
      reply of any device).
    * ``frames`` — temporal correlation of consecutive requests (see :class:`Frames`; default
      i.i.d. samples).
    * ``heartbeat_ms`` — the master's heartbeat period: a device that fails (crash / MTBF) is known
      down one period later, and the master stops waiting for it until one period after its
      repair (``vip_ray.core.master.Knowledge``). Default 1000 (the Serve engine's health-check
      period); ``null``: the master never learns and waits for a failed device until the deadline.
    """

    arrival: Literal["poisson", "periodic", "trace"] = "poisson"
    rate_hz: PositiveFloat | None = None
    fps: PositiveFloat | None = None
    trace: ArrivalTrace | None = None
    requests: PositiveInt | None = None
    duration_s: PositiveFloat | None = None
    deadline_ms: PositiveFloat = 100.0
    input_bytes: PositiveInt | None = None
    fallback: Literal["none", "local", "best_effort"] = "local"
    frames: Frames = Field(default_factory=Frames)
    heartbeat_ms: PositiveFloat | None = 1000.0

    @model_validator(mode="after")
    def _complete(self) -> Workload:
        if self.requests is not None and self.duration_s is not None:
            raise _custom("exclusive", f"requests ({self.requests}) and duration_s ({self.duration_s}) are both "
                                       f"set; set exactly one (override the other with null)", sub="duration_s")
        # a rate that the arrival process would not use is a mistake, not something to ignore
        for key, used_by in (("rate_hz", "poisson"), ("fps", "periodic"), ("trace", "trace")):
            if getattr(self, key) is not None and self.arrival != used_by:
                raise _custom("unused", f"{key} applies to arrival {used_by!r}, but arrival is {self.arrival!r} "
                                        f"(set {key} to null, or arrival: {used_by})", sub=key)
        if self.arrival == "poisson" and self.rate_hz is None:
            self.rate_hz = DEFAULT_RATE_HZ
        if self.arrival == "periodic" and self.fps is None:
            self.fps = DEFAULT_RATE_HZ
        if self.arrival == "trace":
            if self.trace is None:
                raise _custom("required", "arrival 'trace' needs trace: a file name or a list of times (s)",
                              sub="trace")
        elif self.requests is None and self.duration_s is None:
            self.requests = DEFAULT_REQUESTS
        return self

    @property
    def rate(self) -> float | None:
        """Mean arrival rate (1/s) for poisson and periodic arrivals."""
        return {"poisson": self.rate_hz, "periodic": self.fps}.get(self.arrival)
