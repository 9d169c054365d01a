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

from vip_ray.scenario.schema.errors import ScenarioError, validate
from vip_ray.scenario.schema.profiles import DeviceProfile, LinkFields, NetworkProfile
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
    """Every device profile in ``sim/devices``, by name. A profile's ``link.profile`` names a
    network profile, whose fields fill the link's unset ones."""
    entries = _load_catalog("devices", DeviceProfile, root)
    for name, entry in entries.items():
        if entry.link is not None and entry.link.profile is not None:
            entry.link = _with_network_profile(entry.link, name, root)
    return entries


def _with_network_profile(link: LinkFields, device: str, root: str | os.PathLike | None) -> LinkFields:
    networks = network_catalog(root)
    if link.profile not in networks:
        folder = sim_root(root) / "devices"
        file = str(next((f for f in (folder / f"{device}.yml",) if f.is_file()), folder / f"{device}.yaml"))
        raise ScenarioError(f"{file}: link.profile: unknown network profile {link.profile!r}; available: "
                            f"{', '.join(sorted(networks)) or '(none)'}", file=file)
    net = networks[link.profile]
    fill = {f: getattr(net, f) for f in LinkFields.model_fields
            if f != "profile" and getattr(link, f) is None and getattr(net, f, None) is not None}
    return link.model_copy(update=fill, deep=True)


def network_catalog(root: str | os.PathLike | None = None) -> dict[str, NetworkProfile]:
    """Every network profile in ``sim/networks``, by name."""
    return _load_catalog("networks", NetworkProfile, root)


__all__ = ["SIM_ENV", "TraceError", "device_catalog", "find_trace", "list_traces", "network_catalog",
           "read_trace", "sim_root"]
