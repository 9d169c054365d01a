"""``vip-sim``: the command line of vip_ray.

    vip-sim pools list                  the pools in the store
    vip-sim pools show NAME [NAME ...]  variants, pool report, plots (--json for machines)
    vip-sim pools default               build the default pool on first use, then show it
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vip-sim", description="Variant-parallelism simulator and pool tools.")
    sub = p.add_subparsers(dest="command", required=True)
    pools = sub.add_parser("pools", help="inspect the pool store (trained variant pools)")
    psub = pools.add_subparsers(dest="pools_command", required=True)
    ls = psub.add_parser("list", help="list the pools in the store")
    ls.add_argument("--root", default=None, help="pool store (default: $VIP_RAY_POOLS or results/pools)")
    show = psub.add_parser("show", help="a pool's variants and report; writes the plots")
    show.add_argument("names", nargs="+", metavar="NAME", help="pool name(s) or path(s)")
    show.add_argument("--root", default=None)
    show.add_argument("--json", action="store_true", help="print manifest and report as JSON")
    show.add_argument("--alpha", type=float, default=1.0, help="VP eq. 1 exponent α (default 1.0)")
    show.add_argument("--plots", default=None, help="plot folder (default results/reports/<pool>)")
    dflt = psub.add_parser("default", help="build the default pool on first use (cached), then show it")
    dflt.add_argument("--root", default=None)
    return p


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

    from vip_ray.pool import Pool, PoolError, list_pools, pools_root

    t = Table(title=f"pools in {pools_root(args.root)}")
    for col in ("name", "family", "shape", "diversity", "data", "members", "best top-1", "status"):
        t.add_column(col)
    for path in list_pools(args.root):
        try:
            m = Pool.load(path).manifest
            best = max(x.accuracy for x in m.members)
            t.add_row(m.name, m.family, m.shape, m.diversity, m.data["name"], str(len(m.members)),
                      f"{best:.2%}", "ok")
        except PoolError as e:
            t.add_row(path.name, "", "", "", "", "", "", f"[red]refused: {e}[/]")
    console.print(t)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    from vip_ray.data import DataError
    from vip_ray.pool import PoolError

    try:
        if args.command == "pools":
            if args.pools_command == "list":
                return _list(args, console)
            if args.pools_command == "show":
                return _show(args, console)
            if args.pools_command == "default":
                from vip_ray.pool.default import ensure_default_pool

                pool = ensure_default_pool(args.root, log=console.print)
                args.names, args.json, args.alpha, args.plots = [str(pool.path)], False, 1.0, None
                return _show(args, console)
    except (PoolError, DataError) as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}")
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
