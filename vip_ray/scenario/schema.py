"""The scenario schema: what ``scenarios/*.yaml`` may say, with units in the field names.

Every model forbids unknown keys. Device groups and networks may name a catalog profile
(``sim/devices/*.yaml``, ``sim/networks/*.yaml``); inline fields override the profile's.
After validation a :class:`Scenario` is *resolved*: profiles merged, device groups expanded
by ``count`` into single devices, every link filled from the network, every derived default
(master, aggregator, placement policy, service distribution, request count) set. So
``Scenario.model_validate(s.resolved()) == s``.

Errors are turned into :class:`ScenarioError` by :func:`format_validation_error`: one line per
problem with the file, the key path (``devices[2].availability.kind``) and what is allowed.
"""
from __future__ import annotations

from vip_ray.errors import UserError

import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# ---------------------------------------------------------------------------------------------
# Names shared with the other parts (kept here as plain tuples: importing the model registry
# would pull in torch; tests check they agree with vip_ray.models.registry.FAMILIES).
# ---------------------------------------------------------------------------------------------

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


class ScenarioError(UserError, ValueError):
    """A scenario, catalog entry, trace or override that cannot be used.

    ``file`` is the offending file (or ``None``), ``problems`` a list of ``(key_path, message)``.
    The message is human-readable and never a pydantic dump.
    """

    def __init__(self, message: str, *, file: str | None = None,
                 problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.problems = list(problems or [])


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


# ---------------------------------------------------------------------------------------------
# Traces (bandwidth, availability, arrivals): a file under sim/traces or inline data
# ---------------------------------------------------------------------------------------------


def _load_trace(kind: str, name: str, info: ValidationInfo | None, sub: str):
    from vip_ray.scenario.traces import TraceError, find_trace, read_trace

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
    def _fill(self, info: ValidationInfo) -> "BandwidthTrace":
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
    def _fill(self, info: ValidationInfo) -> "ArrivalTrace":
        times = self._load(info)
        for i in range(1, len(times)):
            if times[i] < times[i - 1]:
                raise _custom("trace_error", "arrival times must be sorted (non-decreasing)", sub=f"times_s[{i}]")
        return self


# ---------------------------------------------------------------------------------------------
# Availability processes
# ---------------------------------------------------------------------------------------------


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
    def _shape(self) -> "OnOffAvailability":
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
    def _fill(self, info: ValidationInfo) -> "TraceAvailability":
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
    Union[AlwaysAvailable, OnOffAvailability, TraceAvailability, CrashAvailability, MtbfAvailability],
    Field(discriminator="kind"),
]


def _availability_shorthand(value: Any) -> Any:
    """``availability: always`` is short for ``{kind: always}``."""
    return {"kind": value} if isinstance(value, str) else value


class Straggler(_Model):
    """With probability ``prob`` a job runs ``factor`` (≥ 1) times slower."""

    prob: Probability = 0.0
    factor: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1.0


# ---------------------------------------------------------------------------------------------
# Network and links (star topology around the master)
# ---------------------------------------------------------------------------------------------

#: ``"devices"`` / ``"networks"`` -> ``catalog(sim_root) -> {name: profile}``: a hook that
#: ``vip_ray.scenario.catalog`` fills on import (``vip_ray.scenario`` imports it before this module
#: is used), so the schema never imports the catalog that its profiles validate
CATALOGS: dict[str, Any] = {}

_LINK_FIELDS = ("rtt_ms", "bandwidth_mbps", "loss", "bandwidth_trace")


def _catalog(kind: str, info: ValidationInfo | None) -> dict[str, Any]:
    """The device or network catalog; read once per validation when a context is given."""
    memo = _ctx(info, "catalogs")
    if memo is not None and kind in memo:
        return memo[kind]
    entries = CATALOGS[kind](_ctx(info, "sim_root"))
    if memo is not None:
        memo[kind] = entries
    return entries


def _network_profile(name: Any, info: ValidationInfo | None, sub: str = "profile"):
    catalog = _catalog("networks", info)
    if not isinstance(name, str) or name not in catalog:
        raise _custom("unknown_profile", f"unknown network profile {name!r}; available: "
                                         f"{', '.join(sorted(catalog)) or '(none)'}", sub=sub)
    return catalog[name]


def _merge_network_profile(data: Any, info: ValidationInfo | None, fields: tuple[str, ...]) -> Any:
    if isinstance(data, dict) and data.get("profile") is not None:
        prof = _network_profile(data["profile"], info)
        data = dict(data)
        for f in fields:
            if data.get(f) is None and getattr(prof, f, None) is not None:
                value = getattr(prof, f)
                data[f] = value.model_dump() if isinstance(value, BaseModel) else value
    return data


class LinkSpec(_Model):
    """One master↔device link. In a device group every field is optional and overrides the
    network's; after validation every device's link is complete.

    * ``profile`` — a network catalog entry to start from (e.g. ``wan`` for a cloud server).
    * ``rtt_ms`` — round-trip propagation time, ms (each direction rtt/2).
    * ``bandwidth_mbps`` — Mbit/s (10^6 bit/s), both directions.
    * ``loss`` — probability in [0, 1) that a transmission is lost.
    * ``bandwidth_trace`` — bandwidth steps over time (see :class:`BandwidthTrace`); overrides
      ``bandwidth_mbps`` from its first step on. A link that sets its own ``bandwidth_mbps`` does
      not inherit the network's trace.
    """

    profile: str | None = None
    rtt_ms: NonNegFloat | None = None
    bandwidth_mbps: PositiveFloat | None = None
    loss: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] | None = None
    bandwidth_trace: BandwidthTrace | None = None

    @model_validator(mode="before")
    @classmethod
    def _merge_profile(cls, data: Any, info: ValidationInfo) -> Any:
        return _merge_network_profile(data, info, _LINK_FIELDS)


class NetworkSpec(LinkSpec):
    """The network: star topology, master in the middle. ``profile`` from ``sim/networks`` and/or
    inline fields (inline wins). Fields as :class:`LinkSpec`, plus ``shared_medium``: one
    downlink transmission of each input serves every device at once (Wi-Fi multicast), at the
    slowest link's bandwidth; ``false`` = switched, one unicast per device. Defaults: loss 0,
    shared_medium false; ``rtt_ms`` and ``bandwidth_mbps`` are required (inline or from the profile).
    """

    shared_medium: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _merge_profile(cls, data: Any, info: ValidationInfo) -> Any:
        return _merge_network_profile(data, info, _LINK_FIELDS + ("shared_medium",))

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> "NetworkSpec":
        for f in ("rtt_ms", "bandwidth_mbps"):
            if getattr(self, f) is None:
                names = ", ".join(sorted(_catalog("networks", info)))
                raise _custom("required", f"required: set {f} or a profile (available: {names})", sub=f)
        if self.loss is None:
            self.loss = 0.0
        if self.shared_medium is None:
            self.shared_medium = False
        return self


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------

_COMPUTE_FIELDS = ("macs_per_s", "macs_per_s_by_family", "latency_ms", "overhead_ms")
_SERVICE_FIELDS = ("service_dist", "jitter_cv")
_PLAIN_PROFILE_FIELDS = ("memory_mb", "availability", "straggler")


def _device_profile(name: Any, info: ValidationInfo | None):
    catalog = _catalog("devices", info)
    if not isinstance(name, str) or name not in catalog:
        raise _custom("unknown_profile", f"unknown device profile {name!r}; available: "
                                         f"{', '.join(sorted(catalog)) or '(none)'}", sub="profile")
    return catalog[name]


def _check_families(v: dict[str, float] | None) -> dict[str, float] | None:
    for fam in v or {}:
        if fam not in MODEL_FAMILIES:
            raise _custom("bad_family", f"invalid family {fam!r}; allowed: {', '.join(MODEL_FAMILIES)}", sub=fam)
    return v


class DeviceSpec(_Model):
    """A device group in the YAML; one device after validation (groups are expanded by ``count``).

    * ``name`` — default: the profile name, else ``device<i>``; a group of ``count`` N > 1 becomes
      devices ``name-0`` … ``name-(N-1)``.
    * ``group`` — the group a device was expanded from (default: its name).
    * ``profile`` — a device catalog entry (``sim/devices/<profile>.yaml``); inline fields override it.
    * ``role`` — ``master`` (exactly one device: it multicasts, runs a local variant and
      aggregates) or ``worker``. Default: the first device is the master.
    * ``count`` — number of alike devices in the group (≥ 1).
    * compute (the profile's speeds and overhead are taken as a unit unless ``macs_per_s``,
      ``macs_per_s_by_family`` or ``latency_ms`` is set inline):
      ``macs_per_s`` — effective multiply-accumulates per second;
      ``macs_per_s_by_family`` — per model family (``vp``, ``vp_imagenet``, ``resnet50_slices``,
      ``baseline``), wins over ``macs_per_s``;
      ``latency_ms`` — measured per-inference latency, ms, keyed by member id or model name,
      wins over both;
      ``overhead_ms`` — fixed per-inference time (framework, kernel launches) added to MACs/speed
      (not to ``latency_ms`` entries). Default 0.
      Service time = ``latency_ms[member or model]`` else ``overhead_ms + MACs / speed``.
    * ``memory_mb`` — memory for models, MB (None: unlimited).
    * ``availability`` — ``always`` | ``onoff`` | ``trace`` | ``crash`` | ``mtbf`` (see the models).
    * ``service_dist`` — ``deterministic`` | ``exponential`` (CV 1) | ``lognormal`` (CV
      ``jitter_cv``); default lognormal when ``jitter_cv`` > 0, else deterministic.
    * ``jitter_cv`` — coefficient of variation of the service time (≥ 0).
    * ``straggler`` — ``{prob, factor}``: occasional slow jobs.
    * ``link`` — per-device overrides of the network fields (after validation: the complete link).
    * ``ray_resources`` — Ray custom resources the Serve engine asks for this device's replica,
      e.g. ``{edge_board_1: 1}`` pins it to the node that advertises them (the simulator ignores it).
    """

    name: str | None = None
    group: str | None = None
    profile: str | None = None
    role: Literal["worker", "master"] | None = None
    count: PositiveInt = 1
    macs_per_s: PositiveFloat | None = None
    macs_per_s_by_family: dict[str, PositiveFloat] | None = None
    latency_ms: dict[str, PositiveFloat] | None = None
    overhead_ms: NonNegFloat = 0.0
    memory_mb: PositiveFloat | None = None
    availability: Availability = Field(default_factory=AlwaysAvailable)
    service_dist: Literal["deterministic", "exponential", "lognormal"] | None = None
    jitter_cv: NonNegFloat | None = None
    straggler: Straggler = Field(default_factory=Straggler)
    link: LinkSpec | None = None
    ray_resources: dict[str, PositiveFloat] | None = None

    @model_validator(mode="before")
    @classmethod
    def _merge_profile(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or data.get("profile") is None:
            return data
        prof = _device_profile(data["profile"], info)
        data = dict(data)
        pdump = prof.model_dump(exclude_none=True)
        # speeds come as a unit (with the overhead they were fitted with); so do service_dist + jitter_cv
        for unit, triggers in ((_COMPUTE_FIELDS, _COMPUTE_FIELDS[:3]), (_SERVICE_FIELDS, _SERVICE_FIELDS)):
            if all(data.get(f) is None for f in triggers):
                for f in unit:
                    if data.get(f) is None and f in pdump:
                        data[f] = pdump[f]
        for f in _PLAIN_PROFILE_FIELDS:
            if data.get(f) is None and f in pdump:
                data[f] = pdump[f]
        if prof.link is not None:
            own = data.get("link")
            merged = prof.link.model_dump(exclude_none=True)
            if isinstance(own, dict):
                merged.update({k: v for k, v in own.items() if v is not None})
            elif own is not None:
                merged = own  # not a mapping: let field validation report it
            data["link"] = merged
        return data

    @field_validator("availability", mode="before")
    @classmethod
    def _availability_str(cls, v: Any) -> Any:
        return _availability_shorthand(v)

    _families = field_validator("macs_per_s_by_family")(_check_families)

    @model_validator(mode="after")
    def _complete(self) -> "DeviceSpec":
        if self.macs_per_s is None and not self.macs_per_s_by_family and not self.latency_ms:
            raise _custom("no_compute", "no compute speed: set macs_per_s, macs_per_s_by_family or "
                                        "latency_ms, or a profile that has one")
        cv, dist = self.jitter_cv, self.service_dist
        if dist is None:
            dist = "lognormal" if cv else "deterministic"
        if dist == "deterministic" and cv:
            raise _custom("bad_jitter", f"jitter_cv must be 0 with service_dist deterministic (use lognormal "
                                        f"for jitter), got {cv}", sub="jitter_cv")
        if dist == "exponential":
            if cv not in (None, 1.0):
                raise _custom("bad_jitter", f"exponential service times have CV 1; leave jitter_cv unset or "
                                            f"1, got {cv}", sub="jitter_cv")
            cv = 1.0
        if dist == "lognormal" and not cv:
            raise _custom("bad_jitter", "service_dist lognormal needs jitter_cv > 0", sub="jitter_cv")
        self.service_dist, self.jitter_cv = dist, float(cv or 0.0)
        return self

    # -- helpers for the simulator and the placement policies ---------------------------------

    @property
    def is_master(self) -> bool:
        return self.role == "master"

    def speed(self, family: str | None = None) -> float | None:
        """Effective MAC/s for a model family (by-family figure, else ``macs_per_s``)."""
        by_family = self.macs_per_s_by_family or {}
        if family is not None and family in by_family:
            return by_family[family]
        return self.macs_per_s

    def can_run(self, *, model: str | None = None, member_id: str | None = None,
                family: str | None = None) -> bool:
        table = self.latency_ms or {}
        return (member_id in table) or (model in table) or self.speed(family) is not None

    def service_ms(self, *, macs: float, model: str | None = None, member_id: str | None = None,
                   family: str | None = None) -> float:
        """Mean compute time (ms) of one inference of a pool member on this device."""
        table = self.latency_ms or {}
        for key in (member_id, model):
            if key is not None and key in table:
                return float(table[key])
        speed = self.speed(family)
        if speed is None:
            raise ScenarioError(
                f"device {self.name!r} has no latency_ms entry for {member_id or model!r} and no "
                f"macs_per_s{' for family ' + repr(family) if family else ''}; its table has: "
                f"{', '.join(table) or '(empty)'}")
        return self.overhead_ms + 1000.0 * float(macs) / speed

    def compute_signature(self) -> tuple:
        """Equal for devices that compute alike (used to tell homogeneous from heterogeneous)."""
        return (self.macs_per_s, tuple(sorted((self.macs_per_s_by_family or {}).items())),
                tuple(sorted((self.latency_ms or {}).items())), self.overhead_ms)


# ---------------------------------------------------------------------------------------------
# Pool, workload, strategy, placement, seeds
# ---------------------------------------------------------------------------------------------


class PoolRef(_Model):
    """The trained pool to use.

    * ``name`` — pool name in the store or among the shipped reference pools (default
      ``default``: VP's MobileNetV2 V1..V5 on MNIST-5k, shipped with vip_ray).
    * ``root`` — the pool store (default ``$VIP_RAY_POOLS``, else ``$VIP_RAY_HOME/pools``).
    * ``variants`` — member ids to deploy (default: every ``role: variant`` member, manifest order).
    * ``build`` — training overrides (``python -m vip_ray.tune`` style, e.g.
      ``[family=resnet50_slices, shape=homogeneous, diversity=crops]``) that build the pool on
      first use when the store does not have it; ``pool.name`` and ``pool.root`` are added.
    """

    name: str = "default"
    root: str | None = None
    variants: list[str] | None = None
    build: list[str] | None = None

    @field_validator("variants")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise _custom("empty", "must name at least one member (or leave it out for all variants)")
            dup = sorted({x for x in v if v.count(x) > 1})
            if dup:
                raise _custom("duplicate", f"member ids listed twice: {', '.join(dup)}")
        return v


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
    def _preset(self) -> "Frames":
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

    @model_validator(mode="after")
    def _complete(self) -> "Workload":
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


def _aggregator_names() -> list[str]:
    from vip_ray.core.aggregation import AGGREGATORS

    return sorted(AGGREGATORS)


_DEFAULT_AGGREGATOR = {"vp": "vp", "vip": "vip"}


class StrategySpec(_Model):
    """How a request is served.

    * ``name`` — a registered strategy (``vip-sim strategies`` lists them): ``vp``, ``vip``,
      ``single``, ``mp``, ``cp`` and those of later releases; checked against the registry when
      the scenario runs.
    * ``aggregator`` — a name in ``vip_ray.core.aggregation.AGGREGATORS`` (``vp``, ``vip``,
      ``majority``, or user-registered); default ``vp`` for vp, ``vip`` for vip, none otherwise.
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
            names = _aggregator_names()
            if v not in names:
                raise _custom("bad_aggregator", f"invalid value {v!r}; allowed: {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _default_aggregator(self) -> "StrategySpec":
        if self.aggregator is None:
            self.aggregator = _DEFAULT_AGGREGATOR.get(self.name)
        return self

    @property
    def top_k(self) -> int | None:
        """k as the aggregation module takes it (None = all)."""
        return None if self.k == "all" else int(self.k)


class Placement(_Model):
    """Which variant runs where.

    * ``policy`` — a placement policy name (validated by the scheduler's registry); default
      ``diverse`` when every device computes alike, else ``capacity``.
    * ``params`` — keyword arguments for the policy.
    * ``dynamic`` — re-place variants when device availability changes (VIP's dynamic variant
      management). Default false.
    """

    policy: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    dynamic: bool = False


class Seeds(_Model):
    """``base`` — seed of replication 0 (replication r uses a seed derived from base and r);
    ``replications`` — independent runs (≥ 1)."""

    base: Annotated[int, Field(ge=0)] = 0
    replications: PositiveInt = 1


# ---------------------------------------------------------------------------------------------
# Multi-master scenarios (issue 17.2): users, each multicasting to the devices it reaches
# ---------------------------------------------------------------------------------------------


class User(_Model):
    """A master (a user) of a multi-master scenario.

    * ``name`` — default ``user<i>``; ``count`` N > 1 gives users ``name-0`` … ``name-(N-1)``.
    * ``reaches`` — the devices its requests are multicast to: device names or group names
      (a group reaches every device expanded from it), of its neighbourhood.
    * ``rate_hz`` — its own Poisson rate (default: the workload's arrival process and rate;
      ``workload``'s length, deadline, input size and fallback hold for every user).
    """

    name: str | None = None
    count: PositiveInt = 1
    reaches: Annotated[list[str], Field(min_length=1)]
    rate_hz: PositiveFloat | None = None


class Masters(_Model):
    """``masters:`` — the scenario has several masters (users) instead of one master device.

    * ``neighbourhoods`` — the ``devices`` list and the ``users`` form one neighbourhood; N > 1
      repeats it N times (devices and users ``n<k>.<name>``, k = 0 … N−1). The one key that
      scales a city (``--set masters.neighbourhoods=1000``).
    * ``users`` — list of :class:`User` (≥ 1), each reaching devices of its own neighbourhood.

    No device has role ``master`` (the users aggregate and run no variant, so ``fallback: local``
    has nothing to fall back on); every device is a networked worker. After validation the
    neighbourhoods are expanded (``neighbourhoods`` 1, users one by one with full device names).
    """

    neighbourhoods: PositiveInt = 1
    users: Annotated[list[User], Field(min_length=1)]

    def expand(self, devices: list, complete_link) -> list:
        """Devices of every neighbourhood; fills the expanded users in. ``devices`` are one
        neighbourhood's, already expanded by ``count`` (their links not yet completed)."""
        for i, d in enumerate(devices):
            if d.role == "master":
                raise _custom("master_in_city", f"device {d.name!r} has role master; with masters: the users are "
                                                f"the masters and every device is a worker", sub=f"devices[{i}].role")
        for d in devices:
            d.role = "worker"
            d.link = complete_link(d.link)
        names = {d.name for d in devices}
        groups: dict[str, list[str]] = {}
        for d in devices:
            groups.setdefault(d.group or d.name, []).append(d.name)
        template: list[tuple[str, list[str], float | None]] = []
        seen: set[str] = set()
        for i, u in enumerate(self.users):
            base = u.name or f"user{i}"
            reach: list[str] = []
            for j, r in enumerate(u.reaches):
                hit = [r] if r in names else groups.get(r)
                if not hit:
                    raise _custom("unknown_device", f"no device or group {r!r} in the neighbourhood; devices: "
                                                    f"{', '.join(sorted(names)[:12])}{' ...' if len(names) > 12 else ''}",
                                  sub=f"masters.users[{i}].reaches[{j}]")
                reach += [h for h in hit if h not in reach]
            for name in ([base] if u.count == 1 else [f"{base}-{k}" for k in range(u.count)]):
                if name in seen or name in names:
                    what = "another user's" if name in seen else "a device's"
                    raise _custom("duplicate_name", f"user name {name!r} is also {what} name; "
                                                    f"give each user a distinct name", sub=f"masters.users[{i}].name")
                seen.add(name)
                template.append((name, reach, u.rate_hz))
        order = {d.name: k for k, d in enumerate(devices)}
        n = self.neighbourhoods
        out, users = [], []
        for k in range(n):
            pre = f"n{k}." if n > 1 else ""
            for d in devices:
                out.append(d if n == 1 else d.model_copy(update={"name": pre + d.name, "group": d.group or d.name}))
            for name, reach, rate in template:
                users.append(User(name=pre + name, reaches=[pre + r for r in sorted(reach, key=order.get)],
                                  rate_hz=rate))
        self.neighbourhoods, self.users = 1, users
        return out


# ---------------------------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------------------------


class Scenario(_Model):
    """A complete, validated scenario (see the module docstring and ``scenarios/README.md``).

    * ``name`` — default: the file stem.  * ``description`` — free text.
    * ``pool`` — :class:`PoolRef`.  * ``devices`` — list of :class:`DeviceSpec` (≥ 1).
    * ``network`` — :class:`NetworkSpec` (default profile ``smart_home_wifi``).
    * ``workload`` — :class:`Workload`.  * ``strategy`` — :class:`StrategySpec`.
    * ``placement`` — :class:`Placement`.  * ``seeds`` — :class:`Seeds`.
    * ``engine`` — ``sim`` (SimPy discrete-event simulation) | ``serve`` (live on Ray Serve).
    * ``sim_engine`` — a simulator kernel of ``vip_ray.core.engine.FAMILIES["sim"]``: ``fast``
      (default), ``jit`` (numba), ``loop``, ``numpy``, ``reference`` (the one-process-per-job oracle).
    * ``masters`` — several masters (users) sharing the devices: :class:`Masters`.
    """

    name: str = "scenario"
    description: str = ""
    pool: PoolRef = Field(default_factory=PoolRef)
    devices: list[DeviceSpec]
    network: NetworkSpec
    workload: Workload = Field(default_factory=Workload)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    placement: Placement = Field(default_factory=Placement)
    seeds: Seeds = Field(default_factory=Seeds)
    engine: Literal["sim", "serve"] = "sim"
    sim_engine: str = "fast"
    masters: Masters | None = None      # several masters (users): see Masters

    @field_validator("sim_engine")
    @classmethod
    def _known_kernel(cls, v: str) -> str:
        from vip_ray.core.engine import FAMILIES  # the one engine registry names the kernels

        if v not in FAMILIES["sim"]:
            raise _custom("unknown_engine", f"{v!r} is not a simulator kernel; allowed: {', '.join(FAMILIES['sim'])}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict):
            if data.get("name") is None and _ctx(info, "default_name"):
                data = {**data, "name": _ctx(info, "default_name")}
            if data.get("network") is None:
                data = {**data, "network": {"profile": DEFAULT_NETWORK_PROFILE}}
        return data

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> "Scenario":
        if not self.devices:
            raise _custom("empty", "at least one device is required", sub="devices")
        groups = self.devices
        for i, g in enumerate(groups):
            if g.name is None:
                g.name = g.profile or f"device{i}"
        masters = [i for i, g in enumerate(groups) if g.role == "master"]
        if len(masters) > 1:
            where = ", ".join(f"devices[{i}] ({groups[i].name})" for i in masters)
            raise _custom("two_masters", f"{len(masters)} device groups have role master ({where}); "
                                         f"exactly one device is the master", sub=f"devices[{masters[1]}].role")
        if masters and groups[masters[0]].count > 1:
            i = masters[0]
            raise _custom("master_count", f"the master is one device; group {groups[i].name!r} has count "
                                          f"{groups[i].count} (split it into a master and a worker group)",
                          sub=f"devices[{i}].count")
        expanded: list[DeviceSpec] = []
        origin: dict[str, int] = {}
        for i, g in enumerate(groups):
            base = g.name
            names = [base] if g.count == 1 else [f"{base}-{j}" for j in range(g.count)]
            for name in names:
                if name in origin:
                    raise _custom("duplicate_name", f"device name {name!r} is used twice (devices[{origin[name]}] "
                                                    f"and devices[{i}]); give each group a distinct name",
                                  sub=f"devices[{i}].name")
                origin[name] = i
                d = g.model_copy(deep=True)
                d.name, d.count, d.group = name, 1, g.group or base
                expanded.append(d)
        if self.masters is not None:   # several masters: the users (see Masters)
            ctx = getattr(info, "context", None)
            self.devices = self.masters.expand(expanded, lambda lk: self._complete_link(lk, ctx))
            return self._default_policy()
        if not masters:
            expanded[0].role = "master"
        for d in expanded:
            if d.role is None:
                d.role = "worker"
            d.link = self._complete_link(d.link, getattr(info, "context", None))
        self.devices = expanded
        return self._default_policy()

    def _default_policy(self) -> Scenario:
        if self.placement.policy is None:
            homogeneous = len({d.compute_signature() for d in self.devices}) == 1
            self.placement.policy = "diverse" if homogeneous else "capacity"
        return self

    def _complete_link(self, link: LinkSpec | None, context: dict[str, Any] | None) -> LinkSpec:
        """The network's link fields, overridden by the device's own (see :class:`LinkSpec`)."""
        merged: dict[str, Any] = {f: getattr(self.network, f) for f in _LINK_FIELDS}
        merged["profile"] = None
        if link is not None:
            merged.update({f: getattr(link, f) for f in ("profile",) + _LINK_FIELDS if getattr(link, f) is not None})
            if link.bandwidth_mbps is not None and link.bandwidth_trace is None:
                merged["bandwidth_trace"] = None
        if merged["bandwidth_trace"] is not None:
            merged["bandwidth_trace"] = merged["bandwidth_trace"].model_copy(deep=True)
        return LinkSpec.model_validate(merged, context=context)

    # -- accessors ---------------------------------------------------------------------------

    @property
    def master(self) -> DeviceSpec:
        return next(d for d in self.devices if d.role == "master")

    @property
    def workers(self) -> list[DeviceSpec]:
        return [d for d in self.devices if d.role != "master"]

    def device(self, name: str) -> DeviceSpec:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(f"no device {name!r}; devices: {', '.join(d.name for d in self.devices)}")

    def resolved(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML-safe) with every reference expanded and every default filled;
        ``Scenario.model_validate(s.resolved()) == s``. Written into a run's config.yaml."""
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Catalog entries
# ---------------------------------------------------------------------------------------------


class DeviceProfile(_Model):
    """A device catalog entry (``sim/devices/<name>.yaml``). Fields as :class:`DeviceSpec`,
    plus ``source`` (where the figures come from; required) and ``derivation`` (how)."""

    name: str
    description: str = ""
    source: str
    derivation: str = ""
    macs_per_s: PositiveFloat | None = None
    macs_per_s_by_family: dict[str, PositiveFloat] | None = None
    latency_ms: dict[str, PositiveFloat] | None = None
    overhead_ms: NonNegFloat | None = None
    memory_mb: PositiveFloat | None = None
    availability: Availability = Field(default_factory=AlwaysAvailable)
    service_dist: Literal["deterministic", "exponential", "lognormal"] | None = None
    jitter_cv: NonNegFloat | None = None
    straggler: Straggler | None = None
    link: LinkSpec | None = None

    _families = field_validator("macs_per_s_by_family")(_check_families)

    @field_validator("availability", mode="before")
    @classmethod
    def _availability_str(cls, v: Any) -> Any:
        return _availability_shorthand(v)

    @model_validator(mode="after")
    def _has_speed(self) -> "DeviceProfile":
        if self.macs_per_s is None and not self.macs_per_s_by_family and not self.latency_ms:
            raise _custom("no_compute", "a device profile needs macs_per_s, macs_per_s_by_family or latency_ms")
        return self


class NetworkProfile(_Model):
    """A network catalog entry (``sim/networks/<name>.yaml``): ``rtt_ms``, ``bandwidth_mbps``,
    ``loss``, ``shared_medium``, optional ``bandwidth_trace``; ``source`` required."""

    name: str
    description: str = ""
    source: str
    derivation: str = ""
    rtt_ms: NonNegFloat
    bandwidth_mbps: PositiveFloat
    loss: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    shared_medium: bool = False
    bandwidth_trace: BandwidthTrace | None = None


# ---------------------------------------------------------------------------------------------
# Error formatting
# ---------------------------------------------------------------------------------------------

_TYPE_WORDS = {
    "int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
    "list": "a list", "dict": "a mapping (key: value)", "model": "a mapping (key: value)",
    "tuple": "a list", "model_attributes": "a mapping (key: value)",
}


def _expected_list(text: str) -> str:
    return text.replace("'", "").replace(" or ", ", ")


def path_of(loc: tuple, sub: str | None = None) -> str:
    """``('devices', 2, 'availability', 'onoff', 'mode')`` -> ``devices[2].availability.mode``."""
    out = ""
    prev: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif prev == "availability" and part in AVAILABILITY_KINDS:
            pass  # discriminated-union tag, not a key
        else:
            out += ("." if out else "") + str(part)
        prev = part
    if sub:
        out += sub if sub.startswith("[") else ("." if out else "") + sub
    return out


def _got(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _describe(err: dict[str, Any]) -> tuple[str, str]:
    """(key path, message) of one pydantic error."""
    t, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    loc = tuple(err["loc"])
    sub = ctx.get("sub")
    if t == "missing":
        if loc and isinstance(loc[-1], int):
            return path_of(loc[:-1]), f"too few items (item {loc[-1]} is missing)"
        return path_of(loc), "required key missing"
    if t == "extra_forbidden":
        return path_of(loc), "unknown key"
    if t == "literal_error":
        return path_of(loc), f"invalid value {value!r}; allowed: {_expected_list(ctx.get('expected', ''))}"
    if t in ("union_tag_invalid", "union_tag_not_found"):
        allowed = _expected_list(ctx.get("expected_tags") or ", ".join(AVAILABILITY_KINDS))
        what = f"invalid value {ctx.get('tag')!r}" if t == "union_tag_invalid" else "required key missing"
        return path_of(loc, "kind"), f"{what}; allowed: {allowed}"
    if t.endswith("_type") or t.endswith("_parsing") or t in ("int_from_float", "model_attributes_type"):
        stem = t.split("_")[0] if not t.startswith("model_attributes") else "model_attributes"
        word = _TYPE_WORDS.get(stem)
        if word:
            return path_of(loc), f"expected {word}, got {_got(value)}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if t in bounds:
        limit = next(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le"))
        return path_of(loc), f"must be {bounds[t]} {limit}, got {value!r}"
    if t == "finite_number":
        return path_of(loc), f"must be a finite number, got {value!r}"
    if t == "too_short":
        return path_of(loc), f"needs at least {ctx.get('min_length')} item(s), got {value!r}"
    if t == "too_long":
        return path_of(loc), f"takes at most {ctx.get('max_length')} item(s), got {_got(value)}"
    msg = err.get("msg", t)
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return path_of(loc, sub), msg


def format_validation_error(exc: ValidationError, *, file: str | None,
                            overrides: dict[str, str] | None = None, limit: int = 12) -> ScenarioError:
    """A :class:`ScenarioError` listing every problem as ``file: key.path: message``."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        path, msg = _describe(err)
        for opath, text in (overrides or {}).items():
            if path == opath or path.startswith(opath + ".") or path.startswith(opath + "[") \
                    or opath.startswith(path + ".") or opath.startswith(path + "["):
                msg += f" (set by override {text!r})"
                break
        if (path, msg) not in problems:
            problems.append((path, msg))
    where = file or "<scenario>"
    lines = [f"{where}: {p}: {m}" if p else f"{where}: {m}" for p, m in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    head = lines[0] if len(lines) == 1 else f"{where}: {len(problems)} problems\n  " + "\n  ".join(lines)
    return ScenarioError(head, file=file, problems=problems)


def validate(model: type[BaseModel], data: Any, *, file: str | None, context: dict[str, Any] | None = None,
             overrides: dict[str, str] | None = None) -> Any:
    """``model.model_validate(data)`` with errors as :class:`ScenarioError`."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        raise format_validation_error(e, file=file, overrides=overrides) from None


__all__ = [
    "ARRIVALS", "AVAILABILITY_KINDS", "AlwaysAvailable", "ArrivalTrace", "Availability", "BandwidthTrace",
    "CrashAvailability", "DeviceProfile", "DeviceSpec", "FALLBACKS", "Frames", "LinkSpec", "MODEL_FAMILIES",
    "Masters", "User",
    "MtbfAvailability", "NetworkProfile", "NetworkSpec", "OnOffAvailability", "Placement", "PoolRef",
    "SERVICE_DISTS", "Scenario", "ScenarioError", "Seeds", "StrategySpec", "Straggler",
    "TraceAvailability", "Workload", "format_validation_error", "path_of", "validate",
]
