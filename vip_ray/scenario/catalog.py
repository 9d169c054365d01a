"""The ``sim/`` catalogs: device profiles, network profiles and traces that scenarios name.

Layout (see ``sim/README.md``)::

    sim/devices/<name>.yaml    DeviceProfile   (one per device profile; the file stem is its name)
    sim/networks/<name>.yaml   NetworkProfile
    sim/traces/<name>.csv      bandwidth (t_s,mbps), availability (start_s,end_s), arrivals (t_s)

The folder is ``$VIP_RAY_SIM`` if set, else the ``sim/`` next to the package (a source
checkout), else ``./sim``. Catalogs are re-read when a file changes.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import yaml

from vip_ray.scenario.schema import DeviceProfile, NetworkProfile, ScenarioError, validate

SIM_ENV = "VIP_RAY_SIM"

TRACE_COLUMNS = {
    "bandwidth": ("t_s", "mbps"),
    "availability": ("start_s", "end_s"),
    "arrival": ("t_s",),
}


class TraceError(ValueError):
    """A trace file that is missing or malformed (the message names the file and the line)."""


def sim_root(root: str | os.PathLike | None = None) -> Path:
    """The catalog folder: ``root``, else ``$VIP_RAY_SIM``, else the checkout's ``sim/``, else ``./sim``."""
    if root is not None:
        return Path(root)
    env = os.environ.get(SIM_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "sim"
    if checkout.is_dir():
        return checkout
    return Path("sim")


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


def list_traces(root: str | os.PathLike | None = None) -> list[str]:
    folder = sim_root(root) / "traces"
    return sorted(p.name for p in folder.glob("*.csv")) if folder.is_dir() else []


def find_trace(name: str, *, base_dir: str | os.PathLike | None = None,
               root: str | os.PathLike | None = None) -> Path:
    """A trace file by name: an absolute path, else next to the scenario (``base_dir``), else in
    ``sim/traces`` (``.csv`` may be left out)."""
    if not isinstance(name, str) or not name:
        raise TraceError(f"a trace file name must be a non-empty string, got {name!r}")
    candidates = [Path(name)] if Path(name).is_absolute() else []
    if not candidates:
        bases = ([Path(base_dir)] if base_dir else []) + [sim_root(root) / "traces"]
        for b in bases:
            candidates += [b / name, b / f"{name}.csv"]
    for c in candidates:
        if c.is_file():
            return c
    folder = sim_root(root) / "traces"
    raise TraceError(f"unknown trace file {name!r}; available in {folder}: "
                     f"{', '.join(list_traces(root)) or '(none)'}")


def read_trace(path: str | os.PathLike, kind: str) -> list:
    """Rows of a trace CSV: ``bandwidth`` -> [(t_s, mbps)], ``availability`` -> [(start_s, end_s)],
    ``arrival`` -> [t_s]. A header row names the columns; blank lines and ``#`` comments are
    skipped; other columns are ignored."""
    path = Path(path)
    want = TRACE_COLUMNS[kind]
    try:
        text = path.read_text()
    except OSError as e:
        raise TraceError(f"{path}: cannot read ({e.strerror})") from None
    rows = [(n, r) for n, r in enumerate(csv.reader(text.splitlines()), start=1)
            if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise TraceError(f"{path}: empty trace (expected a header {','.join(want)} and rows)")
    header = [c.strip() for c in rows[0][1]]
    missing = [c for c in want if c not in header]
    if missing:
        raise TraceError(f"{path}: line {rows[0][0]}: a {kind} trace needs columns {', '.join(want)}; "
                         f"header has {', '.join(header)}")
    idx = [header.index(c) for c in want]
    out = []
    for n, row in rows[1:]:
        try:
            vals = [float(row[i]) for i in idx]
        except (ValueError, IndexError):
            raise TraceError(f"{path}: line {n}: expected numbers in columns {', '.join(want)}, got "
                             f"{','.join(row)!r}") from None
        if not all(math.isfinite(v) and v >= 0 for v in vals):
            raise TraceError(f"{path}: line {n}: values must be finite and >= 0, got {','.join(row)!r}")
        if kind == "bandwidth" and vals[1] <= 0:
            raise TraceError(f"{path}: line {n}: mbps must be > 0, got {vals[1]}")
        out.append(vals[0] if kind == "arrival" else tuple(vals))
    if not out:
        raise TraceError(f"{path}: no data rows after the header")
    return out


__all__ = ["SIM_ENV", "TraceError", "device_catalog", "find_trace", "list_traces", "network_catalog",
           "read_trace", "sim_root"]
