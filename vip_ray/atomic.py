"""Output folders that appear whole or not at all, and stops (Ctrl-C, SIGTERM) that clean up.

Every command that writes a folder — ``vip-sim run``, ``compare``, ``sweep`` and the pool
store — writes into a hidden sibling ``.<name>.tmp-<random>`` and renames it into place at the
end. :func:`atomic_directory` is that pattern once: the temporary folder is removed when the
body raises, when the user presses Ctrl-C, and when the process gets SIGTERM (Python's default
for SIGTERM ends the process without running ``finally`` blocks, so while a temporary folder
is open SIGTERM raises :class:`vip_ray.interrupts.Terminated` instead).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from vip_ray.interrupts import signals_held, sigterm_raises


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


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, *, replace: bool = False, durable: bool = False) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``final``; when the body ends normally it is renamed
    to ``final``, otherwise (an exception, Ctrl-C, SIGTERM) it is removed.

    ``replace``: an existing ``final`` is swapped out (and deleted) after the new one is complete;
    otherwise the rename fails if ``final`` appeared meanwhile (callers check first, to answer
    before any work). ``durable``: fsync every file and the folders before the rename.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    with sigterm_raises():
        tmp.mkdir()
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
        except BaseException:
            with signals_held():  # a second Ctrl-C must not leave half a folder behind
                shutil.rmtree(tmp, ignore_errors=True)
            raise



__all__ = ["atomic_directory", "fsync_dir", "temporary_sibling"]
