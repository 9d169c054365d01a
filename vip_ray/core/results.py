"""One atomic result-directory writer and one provenance record, for runs, comparisons, sweeps
and the pool store alike.

:func:`atomic_directory` hands out a hidden temporary folder next to the target and renames it
into place only when the block finishes; on an exception, Ctrl-C or SIGTERM the temporary folder
is removed, so a reader never sees a half-written result (and nothing hidden is left behind).

A study (sweep, comparison) is written *resumably*: its temporary folder has a fixed name,
``.<name>.partial`` (:func:`partial_sibling`), each finished point is renamed into it whole, and on
a failure or an interrupt the folder is kept when it holds finished work, so that ``--resume``
finds it again and runs only the points it lacks.
"""
from __future__ import annotations

from vip_ray.errors import UserError

import contextlib
import os
import platform
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vip_ray.interrupts import signals_held, sigterm_raises


class ResultExists(UserError, FileExistsError):
    """The target folder exists already (nothing is overwritten)."""


class ResultUnwritable(UserError, PermissionError):
    """The target folder cannot be written where it was asked for."""


def check_new_folder(final: str | os.PathLike, option: str = "--out") -> Path:
    """Before any work: ``final`` must not exist, and a folder must be creatable beside it (its
    parent is made if missing; a probe folder is made and removed). One line otherwise, naming
    the folder and ``option``."""
    final = Path(final)
    if final.exists():
        raise ResultExists(f"{final} already exists; pick another {option} (nothing was overwritten)")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        probe = temporary_sibling(final, "probe")
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        above = next((p for p in final.parents if p.exists()), None)
        why = f"{above} is not a folder" if above is not None and not above.is_dir() else (e.strerror or str(e))
        raise ResultUnwritable(f"{final}: cannot write a folder there ({why}); pick another {option}") from None
    return final


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
    fsync_dir(path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_sibling(final: Path, tag: str = "tmp") -> Path:
    """The hidden name a folder is written under before it is renamed to ``final``."""
    return final.parent / f".{final.name}.{tag}-{uuid.uuid4().hex[:8]}"


def partial_sibling(final: str | os.PathLike) -> Path:
    """The fixed hidden name a resumable result is written under (kept after an interrupt)."""
    final = Path(final)
    return final.parent / f".{final.name}.partial"


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, *, replace: bool = False, durable: bool = False,
                     keep_partial: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``final``; when the body ends normally it is renamed
    to ``final``, otherwise (an exception, Ctrl-C, SIGTERM) it is removed.

    ``replace``: an existing ``final`` is swapped out (and deleted) after the new one is complete;
    otherwise the rename fails if ``final`` appeared meanwhile (callers check first, to answer
    before any work). ``durable``: fsync every file and the folders before the rename.

    ``keep_partial``: the result is resumable. The folder is :func:`partial_sibling` (handed out
    again, with what it holds, if an earlier attempt left it: the caller checks it belongs to the
    same work), and when the work is *interrupted* (Ctrl-C, SIGTERM) it is kept if
    ``keep_partial(folder)`` says it holds finished work worth resuming from. A failure (an
    exception) removes it like any other: a command that fails leaves nothing behind.
    """
    final = Path(final)
    if final.exists() and not replace:
        raise ResultExists(f"{final} already exists; pick another output folder (nothing was overwritten)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_sibling(final) if keep_partial else temporary_sibling(final)
    with sigterm_raises():
        tmp.mkdir(exist_ok=keep_partial is not None)
        try:
            yield tmp
            if durable:
                _fsync_tree(tmp)
            if replace and final.exists():
                trash = temporary_sibling(final, "old")
                final.rename(trash)
                tmp.rename(final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                tmp.rename(final)
            if durable:
                fsync_dir(final.parent)
        except BaseException as e:
            with signals_held():  # a second Ctrl-C must not leave half a folder behind
                interrupted = not isinstance(e, Exception)   # KeyboardInterrupt, SIGTERM's Terminated
                if keep_partial is None or not interrupted or not keep_partial(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
            raise




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
