"""``vip-sim``: the command line of vip_ray.

    vip-sim pools list                  where the store is; its pools and the shipped reference pools
    vip-sim pools show NAME [NAME ...]  variants, pool report, plots (--json for machines)
    vip-sim pools default [--retrain]   show the default pool (shipped reference); --retrain trains one here
    vip-sim run FILE [--out DIR] [--set key=value ...]           simulate a scenario
    vip-sim run FILE --engine serve [--address ADDR] [--out DIR]  run it live on Ray Serve
    vip-sim serve FILE [--address ADDR] [--http-port P] [--for S]  keep it up for HTTP clients
    vip-sim sweep FILE --grid key=v1,v2 [--grid ...] [--out DIR]  a grid of runs into one table
    vip-sim compare FILE --strategies single,mp,cp,vp,vip [--failed 0..4] [--out DIR]
    vip-sim compare FILE --policies static,anytime,reactive,oracle   the master's online controllers
                                        strategies side by side under failures and cycle stealing
        sweep and compare: [--workers N] [--address ADDR] [--resume]: each point × replication a Ray
        task (default: every core of a local cluster; --workers 1: in this process), resumable
    vip-sim strategies                  the registered strategies
    vip-sim policies                    the registered online controllers (control.policy)
    vip-sim names [KIND]                every registered name: strategies, engines, placements, aggregators, models
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from rich.console import Console


JSON_HELP = "print the result as JSON on stdout (progress and log lines go to stderr)"
#: Console width when stdout is not a terminal: tables keep their natural width in a pipe or file.
PIPE_WIDTH = 512


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vip-sim", description="Variant-parallelism simulator and pool tools.")
    sub = p.add_subparsers(dest="command", required=True)
    pools = sub.add_parser("pools", help="inspect the pool store (trained variant pools) and the reference pools")
    psub = pools.add_subparsers(dest="pools_command", required=True)
    store_help = "pool store (default: $VIP_RAY_POOLS, else $VIP_RAY_HOME/pools; see vip-sim pools list)"
    ls = psub.add_parser("list", help="where the pool store is, and the pools in it and shipped with vip_ray")
    ls.add_argument("--root", default=None, help=store_help)
    ls.add_argument("--json", action="store_true", help="print the locations and pools as JSON")
    show = psub.add_parser("show", help="a pool's variants and report; writes the plots")
    show.add_argument("names", nargs="+", metavar="NAME", help="pool name(s) or path(s)")
    show.add_argument("--root", default=None, help=store_help)
    show.add_argument("--json", action="store_true", help="print manifest and report as JSON")
    show.add_argument("--alpha", type=float, default=1.0, help="VP eq. 1 exponent α (default 1.0)")
    show.add_argument("--plots", default=None, help="plot folder (default results/reports/<pool>)")
    dflt = psub.add_parser("default", help="show the default pool (the shipped reference unless the store has "
                                           "one); --retrain trains one on this machine")
    dflt.add_argument("--root", default=None, help=store_help)
    dflt.add_argument("--retrain", action="store_true",
                      help="train the default pool here into the store (it then shadows the shipped reference) "
                           "and compare it with the reference")
    dflt.add_argument("--update-reference", action="store_true",
                      help="maintainers: with --retrain, rebuild the shipped reference pool and its SHA256SUMS")
    dflt.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="with --retrain: ray.* or tune.* training settings (e.g. ray.temp_dir=/tmp/r); "
                           "nothing that changes the pool")
    for name, help_ in (("run", "simulate a scenario, or run it live on Ray Serve (--engine serve)"),
                        ("sweep", "run a grid of scenario variations into one tidy table")):
        r = sub.add_parser(name, help=help_)
        r.add_argument("file", help="scenario YAML, e.g. scenarios/smart_home.yaml")
        r.add_argument("--out", default=None, help="output directory (must not exist; default under results/)")
        r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a scenario key, e.g. --set workload.deadline_ms=20 or --set "
                            "devices.2.profile=jetson_nx (devices[2].profile too) (repeatable); `vip-sim names` "
                            "lists what strategy.name, strategy.aggregator, placement.policy and sim_engine take")
        r.add_argument("--engine", choices=_engine_choices(), default=None,
                       help="serve: live on Ray Serve; sim (the scenario's sim_engine) or a simulator kernel "
                            "(default: the scenario's engine)")
        _serve_arguments(r, "--engine serve: ")
        r.add_argument("--json", action="store_true", help=JSON_HELP)
        if name == "run":
            r.add_argument("--failed-devices", type=int, default=None, metavar="N",
                           help="crash the N most capable workers at t=0")
        else:
            r.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                           help="grid axis, e.g. failed_devices=0..4 or workload.deadline_ms=20,50 (repeatable)")
            _study_arguments(r)
    cmp = sub.add_parser("compare", help="several strategies on one scenario, under failures and cycle stealing")
    cmp.add_argument("file", help="scenario YAML, e.g. scenarios/smart_home.yaml")
    cmp.add_argument("--strategies", default="single,mp,cp,vp,vip",
                     help="comma-separated strategy names (default: single,mp,cp,vp,vip)")
    cmp.add_argument("--policies", default=None, metavar="P1,P2,...",
                     help="compare the master's online controllers instead (vip-sim policies; NAME+anytime "
                          "adds the margin rule, NAME+adaptive_k each device's k), the scenario's own "
                          "strategy, same seeds")
    cmp.add_argument("--failed", default=None, metavar="A..B|N,M",
                     help="failed-device counts to run (default: 0..workers)")
    cmp.add_argument("--stealing", default="10:30", metavar="BUSY:FREE|none",
                     help="cycle-stealing condition: workers busy/free mean periods in s (default 10:30), or none")
    cmp.add_argument("--requests", type=int, default=None, help="requests per replication (workload.requests)")
    cmp.add_argument("--out", default=None, help="output directory (must not exist; default under results/compare)")
    cmp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario key (repeatable)")
    cmp.add_argument("--engine", choices=_engine_choices(), default=None,
                     help="serve: live on Ray Serve (every strategy must run there); else a simulator kernel")
    _serve_arguments(cmp, "--engine serve: ")
    _study_arguments(cmp)
    cmp.add_argument("--json", action="store_true", help=JSON_HELP)
    val = sub.add_parser("validate", help="the same scenario and seed on the simulator and live on Ray Serve: "
                                          "the error table (exit 1 above the thresholds)")
    val.add_argument("file", help="scenario YAML, e.g. scenarios/smart_home.yaml")
    val.add_argument("--requests", type=int, default=300, help="requests of the one replication (default 300)")
    val.add_argument("--out", default=None, help="output directory (must not exist; default under results/validate)")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario key (repeatable)")
    val.add_argument("--latency-tol", type=float, default=0.05,
                     help="largest relative error of p50 / p99 / mean latency (default 0.05)")
    val.add_argument("--rate-tol", type=float, default=0.5,
                     help="largest difference of deadline met / answered / top-1, in points (default 0.5)")
    _serve_arguments(val, "", dilation="auto", failures="in_place")
    val.add_argument("--json", action="store_true", help=JSON_HELP)
    prof = sub.add_parser("profile", help="measure a node's forward-pass latency for a pool's members and write a "
                                          "device profile (catalog YAML)")
    prof.add_argument("--pool", required=True, help="pool name (vip-sim pools list) or folder")
    prof.add_argument("--out", required=True, help="profile to write, e.g. sim/devices/my_board.yaml (must not exist)")
    prof.add_argument("--name", default=None, help="the profile's name (default: the file's stem)")
    prof.add_argument("--resources", default=None, metavar="JSON",
                      help='the node to measure: Ray resources it offers, e.g. \'{"edge_board_1": 1}\' (default: any)')
    prof.add_argument("--address", default=None, help="Ray cluster to join (default: start a local one)")
    prof.add_argument("--members", default=None, help="comma-separated member ids (default: all)")
    prof.add_argument("--repeats", type=int, default=50, help="timed passes per member (default 50)")
    prof.add_argument("--warmup", type=int, default=5, help="untimed passes first (default 5)")
    prof.add_argument("--threads", type=int, default=None, help="torch threads on the node (default: torch's)")
    prof.add_argument("--inference", choices=["jit", "eager"], default="jit",
                      help="as the Serve engine runs the variants (default jit)")
    prof.add_argument("--root", default=None, help="pool store folder (default: VIP_RAY_POOLS or the project's)")
    prof.add_argument("--json", action="store_true", help=JSON_HELP)
    strat = sub.add_parser("strategies", help="list the registered strategies")
    strat.add_argument("--json", action="store_true", help=JSON_HELP)
    pol = sub.add_parser("policies", help="list the registered online controllers (the scenario's control.policy)")
    pol.add_argument("--json", action="store_true", help=JSON_HELP)
    names = sub.add_parser("names", help="every registered name, by kind (what the scenario's name keys take)")
    names.add_argument("kind", nargs="?", choices=NAME_KINDS, default=None,
                       help="only this kind (models import torch: a few seconds)")
    names.add_argument("--json", action="store_true", help=JSON_HELP)
    live = sub.add_parser("serve", help="keep a scenario's emulation up on Ray Serve for HTTP clients (Ctrl-C stops)")
    live.add_argument("file", help="scenario YAML, e.g. scenarios/smart_home.yaml")
    live.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a scenario key (repeatable)")
    live.add_argument("--for", dest="duration", type=float, default=None, metavar="SECONDS",
                      help="stop after this many seconds (default: run until Ctrl-C)")
    _serve_arguments(live, "")
    return p


def _engine_choices() -> list[str]:
    from vip_ray.core.engine import ENGINES

    return ["sim", *ENGINES.names()]


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of a study (sweep, compare): where its points × replications run, and resuming."""
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="Ray tasks at a time, one per point × replication (default: every CPU of the cluster, "
                             "a local one unless --address); 1: one after another in this process")
    parser.add_argument("--resume", action="store_true",
                        help="continue the study an interrupted run of the same command left in --out: only the "
                             "points it lacks run")


def _study(args):
    from vip_ray.experiment.study import StudyOptions

    serve = args.engine == "serve"  # then --address is the Serve engine's cluster
    return StudyOptions(workers=args.workers, address=None if serve else args.address, resume=args.resume)


def _serve_arguments(parser: argparse.ArgumentParser, when: str, dilation: str = "1", failures: str = "kill") -> None:
    study = parser.prog.split()[-1] in ("sweep", "compare")
    parser.add_argument("--address", default=None, help=(
        "Ray cluster to join (auto, host:6379, ray://host:10001): the study's tasks run there, or the Serve app "
        "with --engine serve; default: start a local one" if study else
        f"{when}Ray cluster to join (auto, host:6379, ray://host:10001); default: start a local one"))
    parser.add_argument("--http-port", type=int, default=0, help=f"{when}HTTP port (default: a free one)")
    parser.add_argument("--route-prefix", default="/", help=f"{when}the app's HTTP route prefix (default /)")
    parser.add_argument("--devices-per-replica", type=int, default=16,
                        help=f"{when}emulated devices per device-group replica (default 16)")
    parser.add_argument("--time-dilation", default=dilation, metavar="X|auto",
                        help=f"{when}run the emulated world X times slower than wall time so that this host's real "
                             "forward passes fit the emulated device times (auto: calibrated; 1: real time; "
                             f"default {dilation})")
    # validate measures the emulation against the simulator, not Ray's restart time: in place by default
    parser.add_argument("--failures", choices=["kill", "in_place"], default=failures,
                        help=f"{when}a crash / MTBF failure kills the device's replica (Serve restarts it) or "
                             f"happens in place (the simulator's timeline exactly); default {failures}")


def _counts(text: str | None) -> list[int] | None:
    from vip_ray.experiment.sweep import parse_int_range

    return None if text is None else parse_int_range(text, "--failed")


def _steal(text: str) -> tuple[float, float] | None:
    from vip_ray.scenario import ScenarioError

    if text == "none":
        return None
    try:
        busy, free = (float(x) for x in text.split(":"))
        if busy <= 0 or free <= 0:
            raise ValueError
    except ValueError:
        raise ScenarioError(f"--stealing {text!r}: expected BUSY:FREE mean seconds > 0 (e.g. 10:30), or none") from None
    return busy, free


def _compare(args, console: Console, log) -> int:
    import pandas as pd

    from vip_ray.experiment.compare import mean_table, run_compare

    if args.policies is not None:
        return _compare_policies(args, console, log)
    # every argument is checked here, before a pool is opened or trained
    failed, steal = _counts(args.failed), _steal(args.stealing)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    overrides = list(args.overrides) + ([f"workload.requests={args.requests}"] if args.requests is not None else [])
    factory, stop = _progress(console)
    try:
        out = run_compare(args.file, strategies, overrides=overrides, out=args.out, failed=failed, steal=steal,
                          engine=args.engine, log=log, progress_factory=factory, study=_study(args),
                          engine_options=_serve_options(args) if args.engine == "serve" else None)
    finally:
        stop()
    table = mean_table(pd.read_parquet(out / "compare.parquet"))
    if args.json:
        _print_json({"compare_dir": str(out), "table": table.reset_index().to_dict(orient="records")})
        return 0
    cols = ["answered", "deadline_met", "accuracy_top1", "latency_p50_ms", "latency_p99_ms", "bytes_per_request",
            "macs_per_device"]
    with pd.option_context("display.width", 200, "display.max_rows", 200, "display.max_columns", 50):
        _plain(console, table[cols].round(4).to_string())
    _plain(console, f"compare directory: {out}  (compare.parquet, compare.png, points/<strategy>/<condition>/)")
    return 0


def _compare_policies(args, console: Console, log) -> int:
    import pandas as pd

    from vip_ray.experiment.policies import mean_policy_table, run_policies

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    overrides = list(args.overrides) + ([f"workload.requests={args.requests}"] if args.requests is not None else [])
    out = run_policies(args.file, policies, overrides=overrides, out=args.out, engine=args.engine, log=log)
    table = mean_policy_table(pd.read_parquet(out / "policies.parquet"))
    if args.json:
        _print_json({"compare_dir": str(out), "table": table.reset_index().to_dict(orient="records")})
        return 0
    cols = ["answered", "deadline_met", "accuracy_top1", "accuracy_in_deadline", "latency_p50_ms", "latency_p99_ms",
            "redeployments"]
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        _plain(console, table[cols].round(4).to_string())
    _plain(console, f"compare directory: {out}  (policies.parquet, policies.png, points/<policy>/)")
    return 0


#: kind -> (module, registry attribute, the scenario key that takes the name)
NAME_KINDS = {
    "strategies": ("vip_ray.strategies", "STRATEGIES", "strategy.name"),
    "engines": ("vip_ray.core.engine", "ENGINES", "engine / sim_engine / --engine"),
    "placements": ("vip_ray.placement", "PLACEMENTS", "placement.policy"),
    "aggregators": ("vip_ray.core.aggregation", "AGGREGATORS", "strategy.aggregator"),
    "models": ("vip_ray.models", "MODELS", "the pool's family.variants / baselines (python -m vip_ray.tune)"),
    "policies": ("vip_ray.control", "POLICIES", "control.policy"),
}


def _names(args, console: Console) -> int:
    import importlib

    listed = {kind: getattr(importlib.import_module(module), attr).names()
              for kind, (module, attr, _key) in NAME_KINDS.items() if args.kind in (None, kind)}
    if args.json:
        _print_json(listed)
        return 0
    for kind, names in listed.items():
        _plain(console, f"{kind} ({NAME_KINDS[kind][2]}): {', '.join(names)}")
    return 0


def _strategies(args, console: Console) -> int:
    from vip_ray.strategies import STRATEGIES

    if args.json:
        _print_json({name: STRATEGIES[name].summary for name in sorted(STRATEGIES)})
        return 0
    for name in sorted(STRATEGIES):
        console.print(f"[bold]{name:<14}[/] {STRATEGIES[name].summary}")
    return 0


def _policies(args, console: Console) -> int:
    from vip_ray.control import POLICIES

    rows = {name: {"summary": POLICIES[name].summary, "engines": list(POLICIES[name].engines),
                   "master_visible": POLICIES[name].master_visible} for name in POLICIES.names()}
    if args.json:
        _print_json(rows)
        return 0
    for name, row in rows.items():
        console.print(f"[bold]{name:<10}[/] {row['summary']}  [dim](engines: {', '.join(row['engines'])})[/]")
    console.print("every policy takes anytime: true (the margin rule on top) and adaptive_k: true (each "
                  "device's top-k from its measured up-link); scenario key control: {policy: NAME, ...}")
    return 0


def _show(args, console: Console) -> int:
    from vip_ray.pool import Pool
    from vip_ray.pool.report import pool_report, print_report, write_plots

    pools = [Pool.open(n, args.root) for n in args.names]
    reports = [pool_report(p, alpha=args.alpha) for p in pools]
    if args.json:
        out = [{"manifest": json.loads(p.manifest.model_dump_json()), "report": r} for p, r in zip(pools, reports)]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return 0
    for p, r in zip(pools, reports):
        print_report(p, console, report=r)
    plot_dir = Path(args.plots) if args.plots else Path("results/reports") / "+".join(p.name for p in pools)
    for path in write_plots(reports, plot_dir):
        console.print(f"plot: {path}")
    return 0


def _list(args, console: Console) -> int:
    from rich.table import Table

    from vip_ray.pool import (
        Pool,
        PoolError,
        list_pools,
        pools_root,
        reference_pools,
        reference_root,
        vip_ray_home,
    )
    from vip_ray.pool.report import cp_ensemble_accuracy

    store = pools_root(args.root)
    in_store = {p.name for p in list_pools(args.root)}
    entries = [(p, "store") for p in list_pools(args.root)] + \
              [(p, "reference, shadowed by the store" if p.name in in_store else "reference")
               for p in reference_pools()]
    rows = []
    for path, source in entries:
        row = {"name": path.name, "source": source, "path": str(path.resolve())}
        try:
            pool = Pool.open(path)
            m = pool.manifest
            # a class-parallel group model alone answers for its classes only: its pool's figure is CP's
            best = max([x.accuracy for x in m.members if x.role != "cp_group"] +
                       ([cp_ensemble_accuracy(pool)["top1"]] if m.ids("cp_group") else []))
            row.update(family=m.family, shape=m.shape, diversity=m.diversity, data=m.data["name"],
                       members=len(m.members), best_top1=best, bank_sha256=pool.bank_sha256, status="ok")
        except PoolError as e:
            row.update(status=f"refused: {e}")
        rows.append(row)
    where = {"home": str(vip_ray_home()), "store": str(store.resolve()), "reference": str(reference_root())}
    if args.json:
        print(json.dumps({"locations": where, "pools": rows}, indent=2))
        return 0
    console.print(f"pool store: {where['store']}  (--root, $VIP_RAY_POOLS, or $VIP_RAY_HOME/pools; "
                  f"$VIP_RAY_HOME: {where['home']})", soft_wrap=True, highlight=False)
    console.print(f"reference pools (shipped, read-only): {where['reference']}", soft_wrap=True, highlight=False)
    t = Table()
    for col in ("name", "source", "family", "shape", "diversity", "data", "members", "best top-1", "bank sha256",
                "status"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        ok = r["status"] == "ok"
        t.add_row(r["name"], r["source"], r.get("family", ""), r.get("shape", ""), r.get("diversity", ""),
                  r.get("data", ""), str(r.get("members", "")), f"{r['best_top1']:.2%}" if ok else "",
                  r["bank_sha256"][:12] if ok else "", "ok" if ok else "[red]refused[/]")
    # a pipe or a log is 80 columns to rich: give the table the width it needs instead of squeezing it
    (console if console.is_terminal else Console(width=200)).print(t)
    for r in rows:
        if r["status"] != "ok":
            console.print(f"[red]{r['status']}[/]", soft_wrap=True, highlight=False)
    return 0


TRAINING_ONLY = ("ray.", "tune.")  # settings of how a pool is trained that leave the pool itself unchanged


def _default(args, console: Console) -> int:
    from vip_ray.experiment.pools import (
        compare_banks,
        ensure_default_pool,
        rebuild_reference_pool,
    )
    from vip_ray.pool import Pool, PoolError, is_reference, reference_root

    bad = [o for o in args.overrides if not o.startswith(TRAINING_ONLY) or "=" not in o]
    if bad:
        raise PoolError(f"--set {bad[0]}: only ray.* and tune.* settings are allowed here (e.g. ray.temp_dir=/tmp/r); "
                        f"anything else would train another pool than the default one")
    if (args.overrides or args.update_reference) and not args.retrain:
        raise PoolError("--set and --update-reference go with --retrain")
    if args.update_reference:
        pool = rebuild_reference_pool(log=console.print, extra_overrides=tuple(args.overrides))
    else:
        pool = ensure_default_pool(args.root, log=console.print, extra_overrides=tuple(args.overrides),
                                   retrain=args.retrain)
    console.print(f"default pool: {pool.path}" + ("  (shipped reference)" if is_reference(pool.path) else
                                                  "  (trained on this machine; shadows the shipped reference)"),
                  soft_wrap=True, highlight=False)
    if args.retrain and not is_reference(pool.path) and (reference_root() / pool.name).is_dir():
        from rich.table import Table

        rows = compare_banks(pool, Pool.open(reference_root() / pool.name))
        t = Table(title="retrained here vs the shipped reference (same config and seeds)")
        for col in ("member", "top-1 here", "top-1 reference", "same prediction", "bit-identical logits"):
            t.add_column(col)
        for r in rows:
            t.add_row(r["member"], f"{r['top1_local']:.2%}", f"{r['top1_reference']:.2%}",
                      f"{r['same_prediction']:.2%}", "yes" if r["bit_identical"] else "no")
        console.print(t)
    args.names, args.json, args.alpha, args.plots = [str(pool.path)], False, 1.0, None
    return _show(args, console)


def _serve_options(args):
    """The Serve engine's options from the command line (the simulator ignores them)."""
    from vip_ray.serve.config import ServeOptions

    try:
        x = args.time_dilation
        return ServeOptions(address=args.address, http_port=args.http_port, route_prefix=args.route_prefix,
                            devices_per_replica=args.devices_per_replica, failures=args.failures,
                            time_dilation=x if x == "auto" else _positive(x))
    except ValueError as e:
        from vip_ray.experiment.run import RunError

        if "time_dilation" in str(e):
            raise RunError(f"--time-dilation: expected a number > 0 or 'auto', got {args.time_dilation!r}") from None
        raise RunError(f"serve options: {e}") from None


def _positive(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")   # refused by ServeOptions with the flag's name


def _progress(console: Console, what: str = "simulating"):
    """A rich progress bar factory for long runs (requests simulated or emulated)."""
    if not console.is_terminal:  # in a pipe or a file a progress bar is only noise (blank lines)
        return None, lambda: None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bars = []

    def factory(total, label=None):  # label: what is counted, when not requests (a study's tasks)
        prog = Progress(TextColumn(label or what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, transient=True)
        prog.start()
        task = prog.add_task(label or "requests", total=total)
        bars.append(prog)
        return lambda n: prog.advance(task, n)

    def stop():
        for b in bars:
            b.stop()

    return factory, stop


def _print_summary(run_dir: Path, console: Console) -> None:
    from rich.table import Table

    summary = json.loads((run_dir / "summary.json").read_text())
    t = Table(title=f"{summary['scenario']}: {summary['strategy']} on pool {summary['pool']} "
                    f"({summary['replications']} replication(s), engine {summary['engine']})")
    t.add_column("metric")
    t.add_column("mean", justify="right")
    t.add_column("± 95 % CI", justify="right")
    for name, v in summary["metrics"].items():
        pct = name in ("answered", "deadline_met") or name.startswith("accuracy")
        stem = name.removesuffix("_mean")   # the breakdown's stage means: t_down_s_mean → t_down mean, in ms
        ms, joules = stem.endswith("_s"), stem.endswith("_j")
        fmt = ((lambda x: f"{100 * x:.2f} %") if pct else (lambda x: f"{1e3 * x:.2f} ms") if ms
               else (lambda x: f"{x:,.2f} J") if joules else (lambda x: f"{x:,.2f}"))
        label = stem[:-2] + name[len(stem):].replace("_", " ") if ms or joules else name
        t.add_row(label, fmt(v["mean"]), fmt(v["ci95"]) if v["ci95"] is not None else "—")
    console.print(t)
    console.print(f"run directory: {run_dir}  (vip_ray.analysis.load(path) reads it)")


#: What `--set KEY=...` users reach for that is a flag of the command instead.
FLAG_NOT_KEY = {
    "failed_devices": {"run": "--failed-devices N", "sweep": "--grid failed_devices=0..4",
                       "compare": "--failed 0..4",
                       "serve": "devices.N.availability={kind: crash, at_s: 0} (serve has no failed-device flag)"},
}


def _check_overrides(args) -> None:
    """Refuse a ``--set`` of a key that is a flag of this command, naming the flag."""
    from vip_ray.scenario import ScenarioError

    for text in getattr(args, "overrides", None) or []:
        key = text.partition("=")[0].strip().replace("-", "_")
        if key in FLAG_NOT_KEY:
            flag = FLAG_NOT_KEY[key][args.command]
            raise ScenarioError(f"--set {text!r}: {key} is not a scenario key; use {flag}")


def _plain(console: Console, text: str) -> None:
    """Print text as it is: no markup (brackets stay), no highlighting, no wrapping."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def stdout_to_stderr():
    """Everything written to file descriptor 1 goes to 2 meanwhile: Ray's processes print their
    notices (a killed actor's retries, …) on the driver's stdout, and ``--json`` promises one JSON
    object there."""
    import os

    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _print_json(obj) -> None:
    """Strict JSON on stdout (NaN, e.g. the latency of a run that answered nothing, becomes null)."""
    import math

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    print(json.dumps(clean(obj), indent=2, default=str))


def _console(stderr: bool = False) -> Console:
    """A terminal keeps its width; a pipe or file gets wide lines (tables unsqueezed, nothing wrapped)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)


def error_line(message: str) -> None:
    """One ``error: ...`` line on stderr (several lines only when there are several problems)."""
    from rich.text import Text

    Console(stderr=True, soft_wrap=True, highlight=False).print(Text.assemble(("error: ", "bold red"), str(message)))


def main(argv: list[str] | None = None) -> int:
    from vip_ray import interrupts

    args = _parser().parse_args(argv)
    try:
        with interrupts.sigterm_raises():  # SIGTERM runs the finally blocks too: no temp folder, no Ray left behind
            return _dispatch(args)
    except KeyboardInterrupt:
        error_line("interrupted (Ctrl-C); nothing half-written was kept")
        return interrupts.EXIT_INTERRUPTED
    except interrupts.Terminated:
        error_line("terminated (SIGTERM); nothing half-written was kept")
        return interrupts.EXIT_TERMINATED
    except BrokenPipeError:  # `vip-sim ... | head`: the reader has gone; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit flush must not fail again
        return 128 + 13


def _dispatch(args) -> int:
    as_json = getattr(args, "json", False)
    console = _console(stderr=as_json)  # with --json, stdout carries the JSON only

    def log(message) -> None:
        _plain(console, str(message))

    from vip_ray.errors import UserError  # every error a user can cause derives from it (imports nothing heavy)

    try:
        _check_overrides(args)
        if args.command == "pools":
            if args.pools_command == "list":
                return _list(args, console)
            if args.pools_command == "show":
                return _show(args, console)
            if args.pools_command == "default":
                return _default(args, console)
        if args.command == "compare":
            return _compare(args, console, log)
        if args.command == "strategies":
            return _strategies(args, console)
        if args.command == "policies":
            return _policies(args, console)
        if args.command == "validate":
            return _validate(args, console, log)
        if args.command == "profile":
            return _profile(args, console, log)
        if args.command == "names":
            return _names(args, console)
        if args.command == "serve":
            from vip_ray.experiment.run import serve_scenario

            health = serve_scenario(args.file, overrides=args.overrides, options=_serve_options(args),
                                    duration_s=args.duration, log=log)
            log(f"stopped; last health: {health['available']} of {len(health['devices'])} devices available")
            return 0
        if args.command in ("run", "sweep"):
            serve_options = _serve_options(args)
            factory, stop = _progress(console, "emulating" if args.engine == "serve" else "simulating")
            try:
                serve_options = _serve_options(args) if args.engine == "serve" else None
                if args.command == "run":
                    from vip_ray.experiment.run import run_scenario

                    out = run_scenario(args.file, overrides=args.overrides, out=args.out, engine=args.engine,
                                       failed_devices=args.failed_devices, log=log,
                                       progress_factory=factory, serve_options=serve_options)
                    stop()
                    if as_json:
                        _print_json({"run_dir": str(out), **json.loads((out / "summary.json").read_text())})
                    else:
                        _print_summary(out, console)
                else:
                    from vip_ray.experiment.sweep import run_sweep

                    out = run_sweep(args.file, args.grid, overrides=args.overrides, out=args.out, engine=args.engine,
                                    log=log, progress_factory=factory, serve_options=serve_options,
                                    study=_study(args))
                    stop()
                    _print_sweep(out, len(args.grid), console, as_json)
            finally:
                stop()
            return 0
    except UserError as e:
        error_line(str(e))
        return 2
    return 1


def _profile(args, console: Console, log) -> int:
    from vip_ray.experiment.device_profile import ProfileError, profile_device

    try:
        resources = json.loads(args.resources) if args.resources else None
        if resources is not None and not isinstance(resources, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise ProfileError(f"--resources: expected a JSON object like '{{\"edge_board_1\": 1}}', got "
                           f"{args.resources!r} ({e})") from None
    report = profile_device(args.pool, args.out, name=args.name, resources=resources, address=args.address,
                            members=args.members.split(",") if args.members else None, repeats=args.repeats,
                            warmup=args.warmup, threads=args.threads, inference=args.inference, root=args.root,
                            log=log)
    if args.json:
        _print_json(report)
        return 0
    from rich.table import Table

    t = Table(title=f"{report['name']}: {report['host']} ({report['cpu']}), torch {report['torch']}, "
                    f"{report['threads']} thread(s)")
    for c in ("member", "p50 ms", "p90 ms", "mean ms", "cv"):
        t.add_column(c, justify="right")
    for m, s in report["members"].items():
        t.add_row(m, f"{s['p50_ms']:.3f}", f"{s['p90_ms']:.3f}", f"{s['mean_ms']:.3f}", f"{s['cv']:.3f}")
    console.print(t)
    _plain(console, f"device profile written to {report['out']} (jitter_cv {report['jitter_cv']:g}); use it as "
                    f"`profile: {report['name']}` with the file in sim/devices/")
    return 0


def _validate(args, console: Console, log) -> int:
    from vip_ray.experiment.validate import LATENCY_KEYS, RATE_KEYS, validate_scenario

    options = _serve_options(args)
    factory, stop = _progress(console, "validating")
    try:
        with stdout_to_stderr() if args.json else contextlib.nullcontext():
            report = validate_scenario(args.file, requests=args.requests, overrides=args.overrides, out=args.out,
                                       serve_options=options, latency_tol=args.latency_tol, rate_tol=args.rate_tol,
                                       log=log, progress_factory=factory)
    finally:
        stop()
    if args.json:
        _print_json(report)
    else:
        from rich.table import Table

        t = Table(title=f"{report['scenario']}: live (Serve, X = {report['time_dilation']:g}) vs simulator, "
                        f"{report['requests']} requests")
        for c in ("measure", "simulator", "live", "error", "limit"):
            t.add_column(c, justify="right")
        for k, q in zip(LATENCY_KEYS, ("p50", "p99", "mean")):
            sim_v = report.get(f"sim_{q}_ms")
            live_v = report.get(f"live_{q}_ms")
            t.add_row(f"latency {q}", f"{sim_v:.2f} ms" if sim_v is not None else "",
                      f"{live_v:.2f} ms" if live_v is not None else "", f"{100 * report[k]:.1f} %",
                      f"{100 * args.latency_tol:g} %")
        for k, col in zip(RATE_KEYS, ("deadline_met", "answered", "correct_top1")):
            sim_v, live_v = report.get(f"sim_{col}"), report.get(f"live_{col}")
            t.add_row(col.replace("correct_", "").replace("_", " "), f"{sim_v:.2f} %" if sim_v is not None else "",
                      f"{live_v:.2f} %" if live_v is not None else "", f"{report[k]:+.2f} pts", f"±{args.rate_tol:g}")
        t.add_row("same responders", "", "", f"{100 * report['responders_agree']:.1f} %", "")
        t.add_row("same prediction", "", "", f"{100 * report['predictions_agree']:.1f} %", "")
        console.print(t)
        _plain(console, ("PASSED" if report["passed"] else "FAILED: " + "; ".join(report["exceeded"]))
               + f"  ({report['out']})")
    return 0 if report["passed"] else 1


def _print_sweep(out: Path, n_keys: int, console: Console, as_json: bool) -> None:
    import pandas as pd

    table = pd.read_parquet(out / "sweep.parquet")
    keys = [c for c in table.columns if c not in ("point", "replication")][:n_keys]
    means = table.groupby(keys, sort=False)[["answered", "deadline_met", "accuracy_top1", "latency_p50_s"]].mean()
    if as_json:
        _print_json({"sweep_dir": str(out), "table": means.reset_index().to_dict(orient="records")})
        return
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 50):
        _plain(console, means.round(4).to_string())
    _plain(console, f"sweep directory: {out}")


def entry() -> int:
    """The ``vip-sim`` command: :func:`main`, then out without the interpreter's final garbage
    collection, which would walk every object pandas, pydantic and matplotlib made (≈ 0.4 s of a
    2 s run); the process ends here, so nothing would be reclaimed anyway."""
    import gc

    code = main()
    sys.stdout.flush()
    if "triton" not in sys.modules:  # triton's bindings report objects left at exit as leaks (torch imports it)
        gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(entry())
