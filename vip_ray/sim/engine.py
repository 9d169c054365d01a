"""Engine dispatch: ``run(spec, engine)`` and ``run_chunks(spec, engine, chunk_requests)``.

Engines (all give bit-identical per-request arrays; the tests hold them to ``reference``):

* ``reference`` — idiomatic SimPy, one process per (request, device) job; the oracle. Whole run in
  memory (``run_chunks`` splits it afterwards).
* ``loop``      — no event loop: per-device Lindley recursions, one device at a time (best below
  ~50 devices).
* ``numpy``     — the same recursions advanced one request at a time for all devices at once with
  numpy vectors (best from ~50 devices up).
* ``fast``      — ``loop`` below ``FAST_NUMPY_FROM`` devices, ``numpy`` from there (the default);
  ``loop`` for a multi-master world (``reference``, ``loop``, ``fast`` and ``jit`` run those; a
  city runs cell by cell, :func:`vip_ray.core.world.cells`, so each cell is small).
* ``jit``       — the ``loop`` recursions compiled with numba (``engines/jit.py``; numba is imported
  on first use, so ``import vip_ray.sim`` stays light).

``ENGINES`` maps a name to ``(spec, chunk_requests) -> Iterator[SimResult]``; add one with
:func:`register_engine`.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Iterator

from .engines.fast import run_fast_chunks
from .engines.numpy import run_numpy_chunks
from .engines.reference import run_reference
from .result import SimResult, concat_results, split_result
from vip_ray.core.world import SimSpec

FAST_NUMPY_FROM = 48


def _reference_chunks(spec: SimSpec, chunk_requests: int) -> Iterator[SimResult]:
    # The oracle materialises the whole run, then hands it out in chunks.
    yield from split_result(run_reference(spec), chunk_requests)


def _auto_chunks(spec: SimSpec, chunk_requests: int) -> Iterator[SimResult]:
    if len(spec.devices) >= FAST_NUMPY_FROM and not spec.masters:
        return run_numpy_chunks(spec, chunk_requests)
    return run_fast_chunks(spec, chunk_requests)


def _jit_chunks(spec: SimSpec, chunk_requests: int) -> Iterator[SimResult]:
    from .engines.jit import run_jit_chunks  # loads numba (~0.5 s) only when the engine is used
    return run_jit_chunks(spec, chunk_requests)


ENGINES: Dict[str, Callable[[SimSpec, int], Iterator[SimResult]]] = {
    "reference": _reference_chunks,
    "loop": run_fast_chunks,
    "numpy": run_numpy_chunks,
    "fast": _auto_chunks,
    "jit": _jit_chunks,
}


def register_engine(name: str, fn: Callable[[SimSpec, int], Iterator[SimResult]]) -> None:
    ENGINES[name] = fn


def _engine(name: str):
    try:
        return ENGINES[name]
    except (KeyError, TypeError):
        raise ValueError(f"engine: unknown engine {name!r}; allowed values: "
                         f"{', '.join(map(repr, sorted(ENGINES)))}") from None


#: the kernels that run multi-master worlds (``SimSpec.masters``); ``fast`` takes ``loop`` for them
MULTI_MASTER_ENGINES = ("reference", "loop", "fast", "jit")


def _check(spec, engine: str = "fast"):
    if not isinstance(spec, SimSpec):
        raise TypeError(f"spec must be a vip_ray.sim.SimSpec, got {type(spec).__name__}")
    if spec.masters and engine not in MULTI_MASTER_ENGINES:
        raise ValueError(f"engine: {engine!r} runs single-master worlds only; a multi-master world runs on "
                         f"{', '.join(map(repr, MULTI_MASTER_ENGINES))}")


def run_chunks(spec: SimSpec, engine: str = "fast", chunk_requests: int = 100_000) -> Iterator[SimResult]:
    """Results in arrival order, ``chunk_requests`` requests at a time; memory stays flat in the
    run length (except ``reference``). Sum ``device_stats`` over the chunks for run totals."""
    fn = _engine(engine)
    _check(spec, engine)
    if isinstance(chunk_requests, bool) or int(chunk_requests) != chunk_requests or chunk_requests <= 0:
        raise ValueError(f"chunk_requests: must be an int > 0, got {chunk_requests!r}")
    return fn(spec, int(chunk_requests))


def run(spec: SimSpec, engine: str = "fast") -> SimResult:
    """The whole run as one :class:`SimResult`."""
    fn = _engine(engine)
    _check(spec, engine)
    if engine == "reference":
        return run_reference(spec)
    t0 = time.perf_counter()
    # internal chunks bound the engines' working matrices; results do not depend on chunking
    res = concat_results(fn(spec, max(4096, (1 << 22) // max(1, len(spec.devices)))))
    res.wall_s = time.perf_counter() - t0
    return res
