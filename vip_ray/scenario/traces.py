"""Traces (bandwidth, availability, arrivals) and where the shipped data lives (``sim/``): below
the schema and the catalog, which both read them."""
from __future__ import annotations

from vip_ray.errors import UserError
import csv
import math
import os
from pathlib import Path

SIM_ENV = "VIP_RAY_SIM"

TRACE_COLUMNS = {
    "bandwidth": ("t_s", "mbps"),
    "availability": ("start_s", "end_s"),
    "arrival": ("t_s",),
}


class TraceError(UserError, ValueError):
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


__all__ = ["SIM_ENV", "TRACE_COLUMNS", "TraceError", "find_trace", "list_traces", "read_trace", "sim_root"]
