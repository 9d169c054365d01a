"""Studies — sweeps and comparisons — as many points, each all its replications, run in this
process or as Ray tasks on any cluster, written resumably into one result folder.

A study is a list of :class:`StudyPoint` s (a resolved scenario, its strategy, its engine, the
folder it is written to). :func:`run_study` writes every point the folder lacks:

* ``workers == 1``: in this process, one engine per engine name opened once for the whole study
  (the Serve engine starts its app once, not per point);
* otherwise every point × replication is a Ray task (named after the point, so the dashboard
  shows which), at most ``workers`` running at once; each pool's bank is put in the object store
  once; a task whose worker dies is retried (``max_retries``). A point is written by the driver
  when all its replications are back, with the very code the in-process path uses
  (:class:`~vip_ray.experiment.run.PointTables`), in replication order: the seeds come from the
  point and the replication, never from the order tasks finish in, so the tables are identical
  bit for bit to the in-process run.

Layout of the study folder (``.<name>.partial`` while it is written, renamed when complete)::

    study.json        what the study is (kind, scenario file and its sha256, overrides, grid or
                      strategies and conditions, engine, pools' bank sha256): ``--resume`` refuses
                      a folder of another study, naming what differs
    points/<...>/     one folder per finished point (renamed into place whole), as ``vip-sim run``
                      writes: requests.parquet, devices.parquet, summary.json, config.yaml

An interrupted study (Ctrl-C, SIGTERM) keeps its ``.partial`` folder when it holds finished
points; the same command with ``--resume`` runs only the points that folder lacks. A study that
fails (an error) leaves nothing behind, like every command.

Limits: a task returns its replication's whole request table through the object store (the
in-process path streams it in chunks), so a replication of many millions of requests wants
``--workers 1`` or more memory. On a cluster of several machines every node needs vip_ray
installed; the pools travel in the object store (the scenarios' and those a strategy opens by
name, found by preparing one copy of each strategy on the driver).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vip_ray.core.cluster import (
    ClusterError,
    check_reachable,
    cluster_cpus,
    join_or_start,
    local_cpus,
    stop,
)
from vip_ray.core.engine import engine_family, make_engine
from vip_ray.core.results import atomic_directory, check_new_folder, partial_sibling
from vip_ray.errors import UserError
from vip_ray.experiment.run import (
    SUMMARY_FILE,
    PointTables,
    RunError,
    json_safe,
    open_pool,
    run_point,
    write_point_records,
)
from vip_ray.interrupts import Terminated
from vip_ray.pool import Pool
from vip_ray.scenario import Scenario
from vip_ray.strategies import Context, Strategy

STUDY_FILE = "study.json"
Log = Callable[[str], None]


class StudyError(UserError, RuntimeError):
    """A study that cannot start as asked: workers, cluster, or a folder to resume."""


@dataclass
class StudyOptions:
    """How a study runs. ``workers``: 1 runs it in this process; N runs N Ray tasks at a time;
    None runs as many as the cluster has CPUs. ``address``: the Ray cluster to join (default:
    the one this process is connected to, else a local one on this machine's cores).
    ``resume``: continue the study an interrupted run of the same command left in ``--out``."""

    workers: int | None = 1
    address: str | None = None
    resume: bool = False
    dashboard: bool = True      # a local cluster starts Ray's dashboard (the tasks are named there)
    max_retries: int = 3        # a task whose worker or node dies is run again, this many times at most


@dataclass
class StudyPoint:
    """One point: a resolved scenario (failed devices applied, strategy set), its strategy (not
    yet prepared), the engine name, the pool it reads, and where it is written."""

    folder: str                   # relative to the study folder, e.g. points/003
    label: str                    # for log lines and task names, e.g. workload.deadline_ms=20
    scenario: Scenario
    strategy: Strategy
    engine: str
    file: str
    overrides: list[str]
    config: dict[str, Any] = field(default_factory=dict)   # extra config.yaml fields

    @property
    def pool_key(self) -> tuple[str | None, str]:
        return self.scenario.pool.root, self.scenario.pool.name


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _differences(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The fields of ``now`` that ``stored`` has otherwise (``now`` may lack the ones only known
    later, such as the pools' banks)."""
    return [k for k in now if stored.get(k) != now.get(k)]


def _refuse_other_study(folder: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume ``folder`` unless its ``study.json`` describes the same study, naming
    the first field that differs (and how)."""
    f = folder / STUDY_FILE
    try:
        stored = json.loads(f.read_text())
    except (OSError, ValueError):
        raise StudyError(f"--resume: {folder} holds no readable {STUDY_FILE}; it was not written by a study "
                         f"(nothing was changed)") from None
    diff = _differences(stored, identity)
    if diff:
        k = diff[0]
        more = f" (also: {', '.join(diff[1:])})" if len(diff) > 1 else ""
        raise StudyError(f"--resume: {folder} was written by a different study: {k} differs (there: "
                         f"{json.dumps(stored.get(k))}; now: {json.dumps(identity.get(k))}){more}; pick another "
                         f"--out or run the same command as before")


def check_folders(out_dir: Path, identity: dict[str, Any], resume: bool, log: Log) -> bool:
    """Before any work: what ``out_dir`` and its partial folder allow. Returns True when the
    study is complete already (``--resume`` of a finished study: nothing to do)."""
    identity = json_safe(identity)
    partial = partial_sibling(out_dir)
    if out_dir.exists():
        if not resume:
            raise RunError(f"{out_dir} already exists; pick another --out (nothing was overwritten)")
        _refuse_other_study(out_dir, identity)
        log(f"[study] {out_dir} is complete already: nothing to resume")
        return True
    if not partial.exists():
        check_new_folder(out_dir)      # a new study: the folder must be writable (checked before any work)
    if partial.exists():
        if not resume:
            raise StudyError(f"{out_dir}: an interrupted run of a study left its finished points in {partial}; add "
                             f"--resume to continue it, or delete that folder to start again")
        _refuse_other_study(partial, identity)
    elif resume:
        log(f"[study] --resume: no interrupted study at {out_dir}; starting it")
    return False


@dataclass
class ClusterPlan:
    """Where a study's tasks run: ``workers`` at a time on a Ray cluster this study started or
    joined (``started``: it shuts Ray down at the end) or was already connected to."""

    workers: int
    cpus: int
    started: bool = False
    dashboard_url: str | None = None


def plan_cluster(opts: StudyOptions, engine_names: Sequence[str], log: Log) -> ClusterPlan | None:
    """Check ``workers`` and ``address`` before any work; None means: run in this process.
    Joins the cluster at ``address`` (or uses this process's) to count its CPUs; starts no
    local cluster yet (:func:`start_cluster` does, after the pools are open)."""
    w = opts.workers
    if any(engine_family(n) == "serve" for n in engine_names):
        if w not in (None, 1):
            raise StudyError(f"--workers {w}: the serve engine runs a study's points one after another on one Serve "
                             f"app (its devices are Ray actors already); drop --workers")
        return None
    if w == 1:
        if opts.address:
            raise StudyError(f"--address {opts.address!r} goes with --workers N (N >= 2) or no --workers (every CPU "
                             f"of that cluster); --workers 1 runs the study in this process")
        return None
    import ray

    check_reachable(opts.address)  # even when this process is connected already: a typo is named
    if opts.address is None and not ray.is_initialized():
        cpus = local_cpus()
        _check_workers(w, cpus, "CPUs of this machine")
        if w is None and cpus == 1:
            return None  # one core: tasks would only add their overhead
        return ClusterPlan(workers=w or cpus, cpus=cpus)
    started, url = join_or_start(opts.address)
    try:
        cpus = cluster_cpus()
        _check_workers(w, cpus, f"CPUs of the Ray cluster at {opts.address}" if opts.address and started
                       else "CPUs of the connected Ray cluster")
    except BaseException:
        if started:
            stop()
        raise
    return ClusterPlan(workers=w or cpus, cpus=cpus, started=started, dashboard_url=url)


def _check_workers(w: int | None, cpus: int, where: str) -> None:
    if w is not None and not 1 <= w <= cpus:
        raise StudyError(f"--workers {w}: allowed 1..{cpus} ({cpus} {where})")


def start_cluster(plan: ClusterPlan, opts: StudyOptions, log: Log) -> None:
    import ray

    if ray.is_initialized():
        return
    t0 = time.time()
    plan.started, plan.dashboard_url = join_or_start(None, num_cpus=plan.cpus, dashboard=opts.dashboard)
    log(f"[study] local Ray cluster up in {time.time() - t0:.1f} s ({plan.cpus} CPUs)"
        + (f"; its dashboard, http://{plan.dashboard_url}, shows the tasks" if plan.dashboard_url else ""))


# --- the task -------------------------------------------------------------------------------------


@dataclass
class ReplicationTask:
    point: StudyPoint
    replication: int
    chunk_requests: int = 200_000


@dataclass
class ReplicationResult:
    """What a task sends back: the request table in Arrow chunks, the replication's figures,
    device and extra tables, meta, the engine's run summary, its log lines."""

    replication: int
    chunks: list[Any]
    figures: dict[str, float]
    devices: Any
    tables: dict[str, Any]
    meta: dict[str, Any]
    run_summary: dict[str, Any]
    logs: list[str]
    wall_s: float
    cpu_s: float                  # CPU seconds of the task's process (its own work, whatever the load)


def run_replication(pool: Pool, extra_pools: dict[str, Pool], task: ReplicationTask) -> ReplicationResult:
    """One replication of one point (the body of a Ray task; also callable in-process). The
    strategy is prepared here, as the in-process path prepares it once per point: preparing is
    deterministic, so each replication gets the same deployment for its seed."""
    from vip_ray.core.breakdown import BreakdownStats, ensure_breakdown
    from vip_ray.core.energy import meter_for
    from vip_ray.core.tables import ReplicationStats, requests_arrow

    t0, c0 = time.time(), time.process_time()
    p, rep = task.point, task.replication
    logs: list[str] = []

    def opener(name: str) -> Pool:  # the pools the driver opened (and trained if missing) beforehand
        return extra_pools[name] if name in extra_pools else open_pool(p.scenario, logs.append, name)

    ctx = Context(p.scenario, pool, file=p.file, log=logs.append, open_pool=opener)
    strategy = p.strategy
    strategy.prepare(ctx)
    with make_engine(p.engine) as eng:
        dep = strategy.deploy(ctx, p.scenario.seeds.base + rep)
        energy = meter_for(dep)
        out = eng.replicate(dep, replication=rep, chunk_requests=task.chunk_requests)
        stats, chunks, stages = ReplicationStats(), [], BreakdownStats()
        for rows in out:
            rows = energy.annotate(ensure_breakdown(rows))
            stats.add(rows)
            stages.add(rows)
            chunks.append(requests_arrow(rows))
        devices = energy.devices(out.devices)
        figures = {**stats.figures(), **energy.figures(), **stages.figures()}
        return ReplicationResult(rep, chunks, figures, devices, out.tables, out.meta,
                                 eng.run_summary(), logs, time.time() - t0, time.process_time() - c0)


def write_point_from(folder: Path, point: StudyPoint, results: dict[int, ReplicationResult], pool: Pool) -> dict:
    """A point's folder from its replications' results (in replication order)."""
    with atomic_directory(folder) as tmp:
        tables = PointTables(tmp)
        try:
            for rep in sorted(results):
                r = results[rep]
                for chunk in r.chunks:
                    tables.write_chunk(chunk)
                tables.end_replication(rep, r.figures, r.devices, r.tables, r.meta)
        finally:
            tables.close()
        summary = tables.finish(point.scenario, pool.name, point.engine, results[max(results)].run_summary)
        summary["wall_s"] = round(sum(r.wall_s for r in results.values()), 3)  # task time, summed
        summary["cpu_s"] = round(sum(r.cpu_s for r in results.values()), 3)
        eng = make_engine(point.engine)  # not opened: only describes itself in config.yaml
        write_point_records(tmp, summary, point.scenario, pool, eng, source=point.file, overrides=point.overrides,
                            **point.config)
    return summary


# --- the study ------------------------------------------------------------------------------------


def point_done(folder: Path, point: StudyPoint) -> bool:
    return (folder / point.folder / SUMMARY_FILE).is_file()


@contextlib.contextmanager
def study_folder(out_dir: Path, identity: dict[str, Any], points: Sequence[StudyPoint], *,
                 log: Log = print) -> Iterator[Path]:
    """The study's resumable folder (``.<name>.partial`` until complete), ``study.json`` in it;
    on an interrupt it is kept if it holds finished points, and the log says so."""
    with atomic_directory(out_dir, keep_partial=lambda tmp: any(point_done(tmp, p) for p in points)) as tmp:
        f = tmp / STUDY_FILE
        if not f.exists():
            f.write_text(json.dumps(json_safe(identity), indent=2))
        try:
            yield tmp
        except BaseException as e:
            done = sum(point_done(tmp, p) for p in points)
            if done and not isinstance(e, Exception):   # interrupted (an error removes the folder)
                log(f"[study] {done} of {len(points)} points are finished and kept in {tmp}; the same command "
                    f"with --resume runs only the other {len(points) - done}")
            raise


def open_pools(points: Sequence[StudyPoint], log: Log, opened: dict[tuple, Pool] | None = None, *,
               probe: bool = True) -> tuple[dict[tuple, Pool], dict[str, Pool]]:
    """Every pool the points read, opened (trained on first use) once: the scenarios' pools by
    (root, name), and the extra pools strategies open in ``prepare`` (found by preparing one
    copy of each strategy here, before any task runs; only with ``probe``: the in-process path
    opens them as it goes). ``opened``: pools the caller has open."""
    pools: dict[tuple, Pool] = dict(opened or {})
    extra: dict[str, Pool] = {}
    probed: set[tuple] = set()
    for p in points:
        if p.pool_key not in pools:
            pools[p.pool_key] = open_pool(p.scenario, log)
        key = (p.strategy.name, p.pool_key)
        if not probe or key in probed:
            continue
        probed.add(key)

        def opener(name: str, scenario=p.scenario) -> Pool:
            if name not in extra:
                extra[name] = open_pool(scenario, log, name)
            return extra[name]

        probe = copy.deepcopy(p.strategy)
        probe.prepare(Context(p.scenario, pools[p.pool_key], file=p.file, log=lambda s: None, open_pool=opener))
    return pools, extra


def run_study(points: Sequence[StudyPoint], folder: Path, pools: dict[tuple, Pool], extra: dict[str, Pool],
              plan: ClusterPlan | None, opts: StudyOptions, *, kind: str, log: Log, progress_factory=None,
              engine_options: Any = None) -> dict[str, Any]:
    """Write every point ``folder`` lacks; in this process (``plan`` None) or on Ray. Returns
    the engines it opened here (by name; for their ``describe``), none on Ray."""
    todo = [p for p in points if not point_done(folder, p)]
    if len(todo) < len(points):
        log(f"[{kind}] resuming: {len(points) - len(todo)} of {len(points)} points are written already; "
            f"running the other {len(todo)}")
    if not todo:
        return {}
    if plan is None:
        return _run_here(todo, folder, pools, kind=kind, log=log, progress_factory=progress_factory,
                         engine_options=engine_options)
    start_cluster(plan, opts, log)
    try:
        _run_on_ray(todo, folder, pools, extra, plan, opts, kind=kind, log=log, progress_factory=progress_factory)
    finally:
        if plan.started:
            stop()
    return {}


def _run_here(todo: Sequence[StudyPoint], folder: Path, pools: dict[tuple, Pool], *, kind: str, log: Log,
              progress_factory, engine_options: Any) -> dict[str, Any]:
    from vip_ray.experiment.run import _requests_progress

    progress = _requests_progress(progress_factory, [p.scenario for p in todo])
    with contextlib.ExitStack() as stack:
        engines: dict[str, Any] = {}
        for p in todo:
            if p.engine not in engines:  # opened once for the whole study (Serve: one app start)
                engines[p.engine] = stack.enter_context(make_engine(p.engine, engine_options, log=log))
            log(f"[{kind}] point {p.label}")
            run_point(engines[p.engine], p.strategy, p.scenario, pools[p.pool_key], folder / p.folder, file=p.file,
                      overrides=p.overrides, log=log, progress=progress, **p.config)
    return engines


def _wait_one(ray, refs: list) -> list:
    """``ray.wait`` for one result. A Ctrl-C or SIGTERM handled while Ray's compiled wait runs
    comes out as a SystemError around our exception: give the exception itself, so the command
    ends with its one line (and the finished points are kept)."""
    try:
        done, _ = ray.wait(refs, num_returns=1)
    except SystemError as e:
        if isinstance(e.__context__, (KeyboardInterrupt, Terminated)):
            raise e.__context__ from None
        raise
    return done


def _run_on_ray(todo: Sequence[StudyPoint], folder: Path, pools: dict[tuple, Pool], extra: dict[str, Pool],
                plan: ClusterPlan, opts: StudyOptions, *, kind: str, log: Log, progress_factory) -> None:
    import ray

    task = ray.remote(num_cpus=1, max_retries=opts.max_retries, retry_exceptions=False)(run_replication)
    pool_refs = {key: ray.put(pool) for key, pool in pools.items()}  # each bank once in the object store
    extra_ref = ray.put(extra)
    queue = deque((p, rep) for p in todo for rep in range(p.scenario.seeds.replications))
    total = len(queue)
    advance = progress_factory(total, "tasks (point × replication)") if progress_factory else None
    # a queued task per worker keeps each busy while the driver writes; fewer when the cluster has
    # more CPUs than the study may use
    window = plan.workers * 2 if plan.workers >= plan.cpus else plan.workers
    pending: dict[Any, tuple[StudyPoint, int]] = {}
    results: dict[str, dict[int, ReplicationResult]] = {}
    seen_logs: set[str] = set()
    log(f"[{kind}] {len(todo)} points × replications = {total} Ray tasks, {plan.workers} at a time")
    t0 = time.time()
    try:
        while queue or pending:
            while queue and len(pending) < window:
                p, rep = queue.popleft()
                ref = task.options(name=f"{kind} {p.folder} rep {rep}: {p.label}"[:200]).remote(
                    pool_refs[p.pool_key], extra_ref, ReplicationTask(p, rep))
                pending[ref] = (p, rep)
            done = _wait_one(ray, list(pending))
            for ref in done:
                p, rep = pending.pop(ref)
                try:
                    r = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # a bad value found by a task: its one line
                    if isinstance(e.cause, UserError):
                        raise e.cause from None
                    raise
                for line in r.logs:
                    if line not in seen_logs:
                        seen_logs.add(line)
                        log(line)
                got = results.setdefault(p.folder, {})
                got[rep] = r
                if advance:
                    advance(1)
                if len(got) == p.scenario.seeds.replications:
                    write_point_from(folder / p.folder, p, results.pop(p.folder), pools[p.pool_key])
                    log(f"[{kind}] point {p.label} written")
    finally:
        for ref in pending:  # an interrupt or a failed task: stop what is still queued or running
            ray.cancel(ref, force=True)
    log(f"[{kind}] {total} tasks in {time.time() - t0:.1f} s")


__all__ = ["ClusterError", "ClusterPlan", "ReplicationResult", "ReplicationTask", "StudyError", "StudyOptions",
           "StudyPoint", "check_folders", "file_sha256", "open_pools", "plan_cluster", "run_replication",
           "run_study", "study_folder"]
