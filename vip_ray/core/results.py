"""One atomic result-directory writer and one provenance record, for runs, comparisons, sweeps
and the pool store alike.

:func:`atomic_dir` hands out a hidden temporary folder next to the target and renames it into
place only when the block finishes; on an exception, Ctrl-C or SIGTERM the temporary folder is
removed, so a reader never sees a half-written result (and nothing hidden is left behind).
"""
from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import sys
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator


class ResultExists(FileExistsError):
    """The target folder exists already (nothing is overwritten)."""


def _raise_interrupt(signum, frame):  # SIGTERM unwinds like Ctrl-C, so the ``finally`` cleans up
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def atomic_dir(target: str | Path, *, exist_ok: bool = False) -> Iterator[Path]:
    """``with atomic_dir(out) as tmp: write into tmp`` — ``tmp`` becomes ``out`` on success.
    ``exist_ok``: replace an existing ``out`` (the pool store's retrain)."""
    target = Path(target)
    if target.exists() and not exist_ok:
        raise ResultExists(f"{target} already exists; pick another output folder (nothing was overwritten)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield tmp
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:6]}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def versions(*extra: str) -> dict[str, str]:
    """Versions of Python, vip_ray and the libraries a result depends on (``extra``: more modules,
    reported only when already imported — asking must not import torch)."""
    import numpy
    import pandas
    import pyarrow

    import vip_ray

    out = {"python": platform.python_version(), "vip_ray": vip_ray.__version__, "numpy": numpy.__version__,
           "pandas": pandas.__version__, "pyarrow": pyarrow.__version__}
    for name in ("simpy", "ray", "torch", "torchvision", *extra):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = str(getattr(mod, "__version__", "?"))
    return out


def provenance(**fields: Any) -> dict[str, Any]:
    """The record every result carries: what was asked (``fields``), when, where, with what."""
    return {**fields, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "argv": list(sys.argv), "versions": versions()}
