"""Loading scenarios: YAML file + ``key.path=value`` overrides -> validated :class:`Scenario`.

Also the checks that need the pool (member ids, what every device can run) and the default
input size, which the simulator calls once it has opened the pool.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from vip_ray.scenario.catalog import device_catalog, network_catalog
from vip_ray.scenario.catalog import sim_root as _sim_root
from vip_ray.scenario.schema import Scenario, ScenarioError, path_of, validate

#: (channels, height, width) of the shipped data sources, for the default ``input_bytes``.
DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist5k": (1, 28, 28),
    "digits": (1, 8, 8),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
}

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------


def _parse_override(text: str) -> tuple[list[str | int], Any]:
    if not isinstance(text, str) or "=" not in text:
        raise ScenarioError(f"override {text!r}: expected key.path=value (e.g. workload.deadline_ms=50)")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ScenarioError(f"override {text!r}: empty key (expected key.path=value)")
    parts: list[str | int] = []
    for piece in key.split("."):
        if not piece:
            raise ScenarioError(f"override {text!r}: empty segment in key {key!r}")
        pos = 0
        for m in _SEGMENT.finditer(piece):
            if m.start() != pos:
                raise ScenarioError(f"override {text!r}: cannot parse key {key!r}")
            pos = m.end()
            name, index = m.groups()
            parts.append(int(index) if index is not None else (int(name) if name.isdigit() else name))
        if pos != len(piece):
            raise ScenarioError(f"override {text!r}: cannot parse key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ScenarioError(f"override {text!r}: the value is not valid YAML ({getattr(e, 'problem', e)})") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``data`` with each ``key.path=value`` applied in order.

    Values are parsed as YAML (``5`` int, ``0.5`` float, ``null``, ``[1, 2]``, ``{kind: crash,
    at_s: 3}``). Integer segments index lists (``devices.0.count=3`` or ``devices[0].count=3``);
    the index one past the end appends. Missing mapping keys are created.
    """
    out = copy.deepcopy(data) if data is not None else {}
    if not isinstance(out, dict):
        raise ScenarioError("overrides need a scenario that is a mapping")
    for text in overrides:
        parts, value = _parse_override(text)
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = path_of(tuple(parts[:depth])) or "the scenario"
            if isinstance(node, list):
                if not isinstance(part, int):
                    raise ScenarioError(f"override {text!r}: {where} is a list; use an index, not {part!r}")
                if part > len(node):
                    raise ScenarioError(f"override {text!r}: index {part} is out of range ({where} has "
                                        f"{len(node)} entries; index {len(node)} appends)")
                if part == len(node):
                    node.append(None)
                if last:
                    node[part] = value
                else:
                    if node[part] is None:
                        node[part] = [] if isinstance(parts[depth + 1], int) else {}
                    node = node[part]
            elif isinstance(node, dict):
                key = part if part in node else str(part)
                if last:
                    node[key] = value
                else:
                    if node.get(key) is None:
                        node[key] = [] if isinstance(parts[depth + 1], int) else {}
                    node = node[key]
            else:
                raise ScenarioError(f"override {text!r}: {where} is a {type(node).__name__} "
                                    f"({node!r}), not a mapping or list")
    return out


def _override_paths(overrides: Sequence[str]) -> dict[str, str]:
    out = {}
    for text in overrides:
        parts, _ = _parse_override(text)
        out[path_of(tuple(parts))] = text
    return out


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def parse_scenario(data: Any, *, file: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                   base_dir: str | os.PathLike | None = None, sim_root: str | os.PathLike | None = None) -> Scenario:
    """Validate an already-parsed scenario mapping (what :func:`load_scenario` does after reading)."""
    fname = str(file) if file is not None else None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{fname or '<scenario>'}: a scenario must be a mapping of keys to values, "
                            f"got {type(data).__name__}", file=fname)
    try:
        data = apply_overrides(data, overrides)
    except ScenarioError as e:
        raise ScenarioError(f"{fname or '<scenario>'}: {e}", file=fname) from None
    device_catalog(sim_root), network_catalog(sim_root)  # a broken catalog file is reported as itself
    context = {
        "sim_root": str(_sim_root(sim_root)),
        "base_dir": str(base_dir) if base_dir is not None else (str(Path(file).parent) if file else None),
        "default_name": Path(file).stem if file else None,
        "catalogs": {},  # read each catalog once per validation
    }
    scenario = validate(Scenario, data, file=fname, context=context, overrides=_override_paths(overrides))
    return scenario


def load_scenario(path: str | os.PathLike, overrides: Sequence[str] = (), *,
                  sim_root: str | os.PathLike | None = None) -> Scenario:
    """Read, override and validate a scenario file.

    ``overrides`` are ``key.path=value`` strings (see :func:`apply_overrides`), applied before
    validation. Raises :class:`ScenarioError` naming the file, the key path and what is allowed.
    The strategy name and its options are checked by the strategy registry when the scenario runs.
    """
    path = Path(path)
    if not path.is_file():
        near = sorted(p.name for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        hint = f"; scenarios in {path.parent}: {', '.join(near)}" if near else ""
        raise ScenarioError(f"{path}: no such scenario file{hint}", file=str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ScenarioError(f"{path}: invalid YAML{where}: {problem}", file=str(path)) from None
    return parse_scenario(data, file=path, overrides=overrides, sim_root=sim_root)


# ---------------------------------------------------------------------------------------------
# Checks against the pool
# ---------------------------------------------------------------------------------------------


def _manifest(pool: Any) -> Any:
    return getattr(pool, "manifest", pool)


def selected_variants(scenario: Scenario, pool: Any) -> list[Any]:
    """The pool members the scenario deploys (``pool.variants``, else every variant), as
    ``MemberRecord``s in that order. ``pool`` is a ``Pool`` or a ``PoolManifest``."""
    manifest = _manifest(pool)
    ids = scenario.pool.variants or manifest.ids("variant")
    by_id = {m.id: m for m in manifest.members}
    return [by_id[i] for i in ids if i in by_id]


def check_pool(scenario: Scenario, pool: Any, *, file: str | None = None, uses_variants: bool = True) -> None:
    """Checks that need the pool: ``pool.variants`` are members, and every device can compute at
    least one selected variant (a latency-table-only device needs an entry for one of them).
    ``uses_variants``: the strategy places the pool's variants (``Strategy.uses_variants``)."""
    manifest = _manifest(pool)
    where = file or "<scenario>"
    if scenario.pool.variants:
        known = manifest.ids()
        for i, mid in enumerate(scenario.pool.variants):
            if mid not in known:
                raise ScenarioError(f"{where}: pool.variants[{i}]: pool {manifest.name!r} has no member {mid!r}; "
                                    f"members: {', '.join(known)}", file=file)
    members = selected_variants(scenario, manifest)
    if not members and not uses_variants:
        return  # e.g. the end–cloud strategies partition one model; they check their member themselves
    if not members:
        raise ScenarioError(f"{where}: pool: pool {manifest.name!r} has no variant members to deploy", file=file)
    for d in scenario.devices:
        if not any(d.can_run(model=m.model, member_id=m.id, family=m.family) for m in members):
            raise ScenarioError(
                f"{where}: devices (device {d.name!r}): can run none of the selected variants "
                f"({', '.join(m.id for m in members)}): its latency_ms table has "
                f"{', '.join(d.latency_ms or {}) or 'nothing'} and it has no macs_per_s", file=file)


def baseline_member(pool: Any, member_id: str | None, key: str, *, file: str | None = None):
    """The pool member a whole-model strategy runs (single, mp, the end–cloud ones): ``member_id``,
    else the pool's first baseline, else its teacher. ``key`` names the option in errors."""
    manifest = _manifest(pool)
    where = file or "<scenario>"
    if member_id is not None:
        if member_id not in manifest.ids():
            raise ScenarioError(f"{where}: {key}: pool {manifest.name!r} has no member {member_id!r}; "
                                f"members: {', '.join(manifest.ids())}", file=file)
        return manifest.member(member_id)
    for role in ("baseline", "teacher"):
        ids = [m.id for m in manifest.members if m.role == role and ".B" not in m.id]
        if ids:
            return manifest.member(ids[0])
    raise ScenarioError(f"{where}: {key}: pool {manifest.name!r} has no baseline or teacher member; "
                        f"name one of {', '.join(manifest.ids())}", file=file)


def data_shape(pool: Any) -> tuple[int, int, int] | None:
    """(channels, height, width) of the pool's data set images, or None if unknown."""
    manifest = _manifest(pool)
    data = dict(manifest.data)
    cfg = dict((manifest.config or {}).get("data") or {})
    channels = int(data.get("channels") or cfg.get("channels") or 3)
    size = data.get("image_size")
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        return channels, int(h), int(w)
    source = cfg.get("source") or data.get("name")
    if source == "imagefolder":
        s = int(cfg.get("image_size", 64))
        return channels, s, s
    if source in DATASET_SHAPES:
        _, h, w = DATASET_SHAPES[source]
        return channels, h, w
    return None


def input_bytes(scenario: Scenario, pool: Any) -> int:
    """Bytes multicast per request: ``workload.input_bytes``, else the pool data set's
    C×H×W uint8 image size."""
    if scenario.workload.input_bytes is not None:
        return int(scenario.workload.input_bytes)
    shape = data_shape(pool)
    if shape is None:
        manifest = _manifest(pool)
        raise ScenarioError(f"workload.input_bytes: cannot tell the input size of data set "
                            f"{manifest.data.get('name')!r} of pool {manifest.name!r}; set workload.input_bytes")
    c, h, w = shape
    return c * h * w


__all__ = ["DATASET_SHAPES", "apply_overrides", "baseline_member", "check_pool", "data_shape",
           "input_bytes", "load_scenario", "parse_scenario", "selected_variants"]
