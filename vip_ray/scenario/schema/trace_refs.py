"""Traces in a scenario (bandwidth steps, arrival times): a file under ``sim/traces`` (or next to
the scenario), or the values inline. Availability traces are in :mod:`.availability`."""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, model_validator

from vip_ray.scenario.schema.base import (
    NonNegFloat,
    PositiveFloat,
    _ctx,
    _custom,
    _Model,
)
from vip_ray.scenario.traces import TraceError, find_trace, read_trace


def _load_trace(kind: str, name: str, info: ValidationInfo | None, sub: str):
    try:
        path = find_trace(name, base_dir=_ctx(info, "base_dir"), root=_ctx(info, "sim_root"))
        return read_trace(path, kind)
    except TraceError as e:
        raise _custom("trace_error", str(e), sub=sub) from None


class _TraceRef(_Model):
    """A trace written as a file name, as an inline list, or as ``{file, <values>}`` (what
    ``resolved()`` writes; the values win and ``file`` is kept as provenance)."""

    _values: ClassVar[str]  # name of the field holding the inline values
    _kind: ClassVar[str]    # trace kind for the loader and messages
    _example: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"file": data}
        if isinstance(data, (list, tuple)):
            return {cls._values: list(data)}
        return data

    def _load(self, info: ValidationInfo) -> list:
        """The inline values, else the file's (looked up next to the scenario, then in sim/traces)."""
        if not getattr(self, self._values):
            if self.file is None:
                raise _custom("trace_error", f"the {self._kind} trace needs a file or {self._values} {self._example}")
            setattr(self, self._values, _load_trace(self._kind, self.file, info, "file"))
        return getattr(self, self._values)


class BandwidthTrace(_TraceRef):
    """Bandwidth over time, a step function: from ``t_s`` on the link runs at ``mbps``.
    A CSV file with columns ``t_s,mbps``, or inline ``[[t_s, mbps], ...]``."""

    _values: ClassVar[str] = "points"
    _kind: ClassVar[str] = "bandwidth"
    _example: ClassVar[str] = "[[t_s, mbps], ...]"
    file: str | None = None
    points: list[tuple[NonNegFloat, PositiveFloat]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fill(self, info: ValidationInfo) -> BandwidthTrace:
        points = self._load(info)
        for i in range(1, len(points)):
            if not points[i][0] > points[i - 1][0]:
                raise _custom("trace_error", f"times must be strictly increasing (t_s {points[i][0]} "
                                             f"after {points[i - 1][0]})", sub=f"points[{i}]")
        return self


class ArrivalTrace(_TraceRef):
    """Request arrival times in seconds (non-decreasing). A CSV file with a ``t_s`` column, or
    an inline list ``[t_s, ...]``."""

    _values: ClassVar[str] = "times_s"
    _kind: ClassVar[str] = "arrival"
    _example: ClassVar[str] = "[t_s, ...]"
    file: str | None = None
    times_s: list[NonNegFloat] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fill(self, info: ValidationInfo) -> ArrivalTrace:
        times = self._load(info)
        for i in range(1, len(times)):
            if times[i] < times[i - 1]:
                raise _custom("trace_error", "arrival times must be sorted (non-decreasing)", sub=f"times_s[{i}]")
        return self
