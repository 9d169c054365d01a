"""bench.determinism's main-job row: the figures it reports are the run's own tables."""
import numpy as np
import pandas as pd
import pytest

from vip_ray.bench import determinism


def test_smart_home_row_reports_p50_p99_and_deadline_met_of_the_requests_table(tmp_path, monkeypatch):
    monkeypatch.setenv("VIP_RAY_HOME", str(tmp_path / "home"))  # no store pool shadows the shipped reference
    monkeypatch.delenv("VIP_RAY_POOLS", raising=False)
    row = determinism._smart_home(None, "default", tmp_path / "run")
    [requests] = list((tmp_path / "run").rglob("requests.parquet"))
    df = pd.read_parquet(requests)
    # per replication: quantiles of the answered requests' latencies (stored as float32), then the mean
    p50, p99, met, top1 = [], [], [], []
    for _, rep in df.groupby("replication"):
        lat = rep["latency_s"].to_numpy()
        lat = lat[~np.isnan(lat)].astype(np.float32)
        p50.append(np.quantile(lat, 0.5))
        p99.append(np.quantile(lat, 0.99))
        met.append(rep["deadline_met"].mean())
        top1.append(rep["correct_top1"].mean())
    assert set(row) == {"accuracy_top1", "deadline_met", "latency_p50_s", "latency_p99_s"}
    mean = lambda xs: float(np.mean(np.asarray(xs, dtype=np.float64)))  # noqa: E731
    assert row["latency_p50_s"] == pytest.approx(mean(p50), rel=1e-9)
    assert row["latency_p99_s"] == pytest.approx(mean(p99), rel=1e-9)
    assert row["latency_p99_s"] > row["latency_p50_s"]
    assert row["deadline_met"] == pytest.approx(mean(met), rel=1e-12)
    assert row["accuracy_top1"] == pytest.approx(mean(top1), rel=1e-12)
