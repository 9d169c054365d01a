"""Entry point: ``python -m vip_ray.tune diversity=crops data=digits resources.cpu=1``."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text


def _error(console: Console, message: str) -> None:
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console(stderr=True)
    if any(a in ("-h", "--help") for a in argv):
        console.print(__doc__ or "", "\nConfig groups: data, family, shape, diversity (see the tune/ folder). "
                      "Any key can be set with key=value, e.g. train.kd=both resources.cpu=1 ray.address=auto.",
                      markup=False)
        return 0
    from vip_ray import interrupts

    try:
        with interrupts.sigterm_raises():  # SIGTERM too runs the clean-up (Ray shut down, no half pool)
            return _train(argv, console)
    except KeyboardInterrupt:
        from vip_ray.tune.runner import RESUME_HINT

        _error(console, f"interrupted (Ctrl-C); {RESUME_HINT}")
        return interrupts.EXIT_INTERRUPTED
    except interrupts.Terminated:
        from vip_ray.tune.runner import RESUME_HINT

        _error(console, f"terminated (SIGTERM); {RESUME_HINT}")
        return interrupts.EXIT_TERMINATED


def _train(argv: list[str], console: Console) -> int:
    from vip_ray.data import DataError
    from vip_ray.pool import PoolError
    from vip_ray.tune.config import ConfigCompositionError, compose
    from vip_ray.tune.plan import ConfigError
    from vip_ray.tune.runner import TrainingError, train_pool

    def log(message) -> None:
        console.print(str(message), markup=False, highlight=False, soft_wrap=True)

    try:
        cfg = compose(argv)
        path = train_pool(cfg, log=log)
    except (ConfigCompositionError, ConfigError, DataError, PoolError, TrainingError, ValueError) as e:
        _error(console, str(e))
        return 2
    from vip_ray.pool import Pool
    from vip_ray.pool.report import print_report

    print_report(Pool.load(path), Console())
    return 0


if __name__ == "__main__":
    sys.exit(main())
