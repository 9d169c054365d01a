"""Read any vip_ray result into pandas: ``vip_ray.analysis.load(path) -> DataFrame``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def load(path: str | Path, table: str = "requests") -> pd.DataFrame:
    """A run directory (``table`` = requests | devices), a sweep directory (its tidy table),
    or a parquet file."""
    p = Path(path)
    if p.is_file():
        return pd.read_parquet(p)
    if (p / "sweep.parquet").is_file():
        return pd.read_parquet(p / "sweep.parquet")
    f = p / f"{table}.parquet"
    if not f.is_file():
        raise FileNotFoundError(f"{p}: no {f.name} (expected a run directory with requests.parquet / "
                                f"devices.parquet, a sweep directory with sweep.parquet, or a parquet file)")
    return pd.read_parquet(f)
