"""Stopping a command cleanly: Ctrl-C and SIGTERM end it with one line and a conventional exit
status, after the ``finally`` blocks have removed half-written folders and shut down the Ray
cluster the command started.

* SIGTERM: Python's default ends the process at once, skipping ``finally``; inside
  :func:`sigterm_raises` it raises :class:`Terminated` instead (``ray.init`` installs its own
  SIGTERM handler, so :func:`start_ray` puts ours back).
* Ctrl-C while Ray starts: a ``KeyboardInterrupt`` in the middle of ``ray.init`` leaves its
  half-started processes to Ray's reaper; :func:`start_ray` shuts them down before the
  interrupt goes on.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: Exit status of a command stopped by Ctrl-C (128 + SIGINT), the shell's convention.
EXIT_INTERRUPTED = 128 + signal.SIGINT
#: Exit status of a command stopped by SIGTERM (128 + SIGTERM).
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM arrived; raised in the main thread so that ``finally`` blocks clean up.

    A ``BaseException`` like ``KeyboardInterrupt``: ``except Exception`` does not swallow it."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (then the previous
    handler is back). Does nothing off the main thread or when another handler is installed."""
    if not _main_thread() or signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        yield  # ours further up, or the embedding program's
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while inside (they are delivered on leaving)."""
    if not _main_thread():
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


WORKER_NICENESS_ENV = "RAY_worker_niceness"


def calm_workers() -> None:
    """Run the workers of a Ray cluster this process starts at its own priority, not Ray's nice 15.

    Ray lowers its workers' priority so that its daemons stay responsive. Beside any job at normal
    priority that starves them: the emulated devices miss their timelines and training trials crawl
    (a small pool's trials had not started after 4.5 min beside two busy loops on 2 cores; at nice 0
    they trained in 102 s). Only a cluster started here is affected; a joined cluster keeps its own
    setting, and ``RAY_worker_niceness`` set by the user wins."""
    os.environ.setdefault(WORKER_NICENESS_ENV, "0")


def start_ray(**init_kwargs: Any):
    """``ray.init(**init_kwargs)``, and if Ctrl-C or SIGTERM cuts it short, ``ray.shutdown()``
    before the interrupt goes on: the processes started so far are stopped now, not when Ray's
    reaper notices the driver has gone. Keeps the caller's SIGTERM handler, if any (``ray.init``
    installs its own). Returns ``ray.init``'s context.

    (Holding the interrupt until ``ray.init`` returns would also work, but on a loaded machine
    that is tens of seconds between Ctrl-C and the prompt.)"""
    import ray

    calm_workers()
    sigterm = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    try:
        return ray.init(**init_kwargs)
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, Terminated, SystemExit)):
            with signals_held():
                ray.shutdown()
        raise
    finally:
        if callable(sigterm):  # ours (or the program's); without one, Ray's sys.exit handler stays
            signal.signal(signal.SIGTERM, sigterm)


__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "Terminated", "calm_workers", "signals_held", "sigterm_raises",
           "start_ray"]
