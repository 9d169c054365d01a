"""The ``sim/`` catalogs: device profiles, network profiles and traces that scenarios name.

Layout (see ``sim/README.md``)::

    sim/devices/<name>.yaml    DeviceProfile   (one per device profile; the file stem is its name)
    sim/networks/<name>.yaml   NetworkProfile
    sim/traces/<name>.csv      bandwidth (t_s,mbps), availability (start_s,end_s), arrivals (t_s)

The folder is ``$VIP_RAY_SIM`` if set, else the ``sim/`` next to the package (a source
checkout), else ``./sim``. Catalogs are re-read when a file changes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from vip_ray.scenario import schema
from vip_ray.scenario.schema import DeviceProfile, NetworkProfile, ScenarioError, validate
from vip_ray.scenario.traces import SIM_ENV, TRACE_COLUMNS, TraceError, find_trace, list_traces, read_trace, sim_root  # noqa: F401


_CACHE: dict[tuple, dict[str, Any]] = {}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ScenarioError(f"{path}: invalid YAML{where}: {problem}", file=str(path)) from None
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read ({e.strerror})", file=str(path)) from None


def _load_catalog(kind: str, model: type, root: str | os.PathLike | None) -> dict[str, Any]:
    folder = sim_root(root) / kind
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")) if folder.is_dir() else []
    key = (kind, str(folder.resolve()), tuple((f.name, f.stat().st_mtime_ns) for f in files))
    if key in _CACHE:
        return _CACHE[key]
    entries: dict[str, Any] = {}
    for f in files:
        raw = _read_yaml(f)
        if not isinstance(raw, dict):
            raise ScenarioError(f"{f}: a {kind[:-1]} profile must be a mapping of keys to values", file=str(f))
        raw = dict(raw)
        if raw.setdefault("name", f.stem) != f.stem:
            raise ScenarioError(f"{f}: name: {raw['name']!r} must equal the file stem {f.stem!r}", file=str(f))
        context = {"sim_root": str(sim_root(root)), "base_dir": str(f.parent)}
        entries[f.stem] = validate(model, raw, file=str(f), context=context)
    _CACHE[key] = entries
    return entries


def device_catalog(root: str | os.PathLike | None = None) -> dict[str, DeviceProfile]:
    """Every device profile in ``sim/devices``, by name."""
    return _load_catalog("devices", DeviceProfile, root)


def network_catalog(root: str | os.PathLike | None = None) -> dict[str, NetworkProfile]:
    """Every network profile in ``sim/networks``, by name."""
    return _load_catalog("networks", NetworkProfile, root)


# the schema validates profile names against the catalogs through this hook (it cannot import
# this module: the catalog's entries are validated by the schema)
schema.CATALOGS.update(devices=device_catalog, networks=network_catalog)

__all__ = ["SIM_ENV", "TraceError", "device_catalog", "find_trace", "list_traces", "network_catalog",
           "read_trace", "sim_root"]
