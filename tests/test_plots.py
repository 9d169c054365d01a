"""The plots say what they show: counts and labels checked against tables written by hand."""
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from vip_ray.experiment.compare import compare_figure
from vip_ray.experiment.plots import (
    _reduce,
    accuracy_vs_responders_figure,
    availability_timeline_figure,
    latency_cdf_figure,
    run_plots,
)
from vip_ray.experiment.sweep import axis_label, sweep_figure

DEADLINE = 0.05  # s


@pytest.fixture
def run_dir(tmp_path):
    """Two replications of 10 requests each, latencies chosen by hand:
    rep 0: 7 within the deadline, 1 between 1x and 2x, 1 past 2x (0.2 s), 1 unanswered;
    rep 1: 8 within, 2 past 2x (0.11 s and 1.0 s)."""
    lat0 = [0.01, 0.02, 0.02, 0.03, 0.04, 0.045, 0.049, 0.07, 0.2, np.nan]
    lat1 = [0.01] * 8 + [0.11, 1.0]
    rows = []
    for rep, lats in enumerate((lat0, lat1)):
        for i, lat in enumerate(lats):
            answered = not np.isnan(lat)
            # device 'a' answers every request in time; 'b' only the even ones
            responders = ",".join(d for d, ok in (("a", answered), ("b", answered and i % 2 == 0)) if ok)
            rows.append({"replication": rep, "arrival_s": float(i) + 0.5 * rep, "latency_s": lat,
                         "n_responders": len(responders.split(",")) if responders else 0,
                         "correct_top1": float(i < 6), "responders": responders})
    pd.DataFrame(rows).to_parquet(tmp_path / "requests.parquet", index=False)
    pd.DataFrame({"replication": [0, 0, 1, 1], "device": ["a", "b", "a", "b"]}).to_parquet(
        tmp_path / "devices.parquet", index=False)
    (tmp_path / "summary.json").write_text(json.dumps({"deadline_s": DEADLINE, "scenario": "hand"}))
    return tmp_path


def test_latency_cdf_counts_what_it_does_not_draw(run_dir):
    red = _reduce(run_dir, DEADLINE, ["a", "b"])
    assert red["late"] == {0: 1, 1: 2} and red["unanswered"] == {0: 1, 1: 0}
    # the drawn part ends at what was answered within 2x the deadline: 8 of 10 (rep 0), 8 of 10 (rep 1)
    assert red["lat_hist"][0].sum() == 8 and red["lat_hist"][1].sum() == 8
    fig = latency_cdf_figure(red, DEADLINE, "hand")
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "3 of 20 requests (15.00 %) answered after 2× the deadline" in text
    assert "1 (5.00 %) never answered" in text
    assert fig.axes[0].get_xlim() == (0.0, 100.0)  # ms: 2 x 50 ms
    plt.close(fig)


def test_accuracy_vs_responders_has_whole_device_counts(run_dir):
    red = _reduce(run_dir, DEADLINE, ["a", "b"])
    # responders: 0 (the unanswered), 1 (odd answered), 2 (even answered)
    np.testing.assert_array_equal(red["by_resp_n"], [1, 9, 10])
    fig = accuracy_vs_responders_figure(red)
    ticks = [t for t in fig.axes[0].get_xticks() if -0.5 <= t <= 2.5]
    assert ticks and all(float(t).is_integer() for t in ticks)
    plt.close(fig)


def test_availability_timeline_pools_replications_and_labels_its_scale(run_dir):
    red = _reduce(run_dir, DEADLINE, ["a", "b"])
    assert red["replications"] == 2 and red["per_bin"].sum() == 20  # every request of both replications
    # device a answered all 19 answered requests, b the 10 even-numbered answered ones
    assert (red["timeline"][0] * red["per_bin"]).sum() == pytest.approx(19)
    assert (red["timeline"][1] * red["per_bin"]).sum() == pytest.approx(10)
    fig = availability_timeline_figure(red, ["a", "b"])
    ax, bar = fig.axes
    width = float(ax.get_xlabel().split("bins of ")[1].split(" s")[0])
    assert width == pytest.approx(9.5 / 40, rel=5e-3)  # arrivals span 0 .. 9.5 s in 40 bins
    assert "all 2 replications pooled" in ax.get_title()
    assert bar.get_ylabel() == "share answered in time"
    plt.close(fig)


def test_run_plots_writes_the_three_files(run_dir):
    paths = run_plots(run_dir)
    assert sorted(p.name for p in paths) == ["accuracy_vs_responders.png", "availability_timeline.png",
                                             "latency_cdf.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_run_plots_add_the_breakdown_batch_by_batch(run_dir, monkeypatch):
    """A table with the breakdown: b decided the answered even-numbered requests, a the other
    answered ones; each of the seven stages took a seventh of the latency."""
    from vip_ray.experiment.energy_plots import STAGES

    req = pd.read_parquet(run_dir / "requests.parquet")
    answered = req["latency_s"].notna()
    even = req.index % 10 % 2 == 0                       # i within its replication (10 requests each)
    req["decisive_device"] = pd.Categorical(np.where(answered, np.where(even, "b", "a"), None), categories=["a", "b"])
    for col, _ in STAGES:
        req[col] = req["latency_s"] / len(STAGES)
    req.to_parquet(run_dir / "requests.parquet", index=False)
    red = _reduce(run_dir, DEADLINE, ["a", "b"], batch_size=3)   # 7 batches, devices split across them
    names, means, counts = red["breakdown"]
    lat0 = [0.01, 0.02, 0.02, 0.03, 0.04, 0.045, 0.049, 0.07, 0.2]   # the fixture's answered latencies
    lat1 = [0.01] * 8 + [0.11, 1.0]
    b = lat0[0::2] + lat1[0::2]
    a = lat0[1::2] + lat1[1::2]
    assert dict(zip(names, counts.tolist())) == {"a": len(a), "b": len(b)}
    want = {"a": 1e3 * sum(a) / len(a) / 7, "b": 1e3 * sum(b) / len(b) / 7}
    for name, row in zip(names, means):
        np.testing.assert_allclose(row, [want[name]] * len(STAGES))
    paths = run_plots(run_dir)
    assert [p.name for p in paths][-1] == "latency_breakdown.png" and len(paths) == 4
    # past MAX_DEVICE_BARS (here 1) the devices share one bar, over all their requests
    from vip_ray.experiment import energy_plots

    monkeypatch.setattr(energy_plots, "MAX_DEVICE_BARS", 1)
    names, means, counts = _reduce(run_dir, DEADLINE, ["a", "b"], batch_size=3)["breakdown"]
    assert names == ["other 2 devices"] and counts.tolist() == [len(a) + len(b)]
    np.testing.assert_allclose(means[0], [1e3 * sum(a + b) / len(a + b) / 7] * len(STAGES))


def test_sweep_figure_shows_latency_and_keeps_both_rates_visible():
    rows = []
    for n, (acc, p50) in enumerate([(0.97, 0.012), (0.95, 0.020), (0.93, 0.050)]):
        for rep, jitter in enumerate((-0.005, 0.005)):
            rows.append({"point": n, "failed_devices": n, "replication": rep, "answered": 1.0,
                         "deadline_met": 0.9 - 0.1 * n, "accuracy_top1": acc + jitter,
                         "latency_p50_s": p50, "latency_p99_s": 2 * p50})
    fig = sweep_figure(pd.DataFrame(rows), ["failed_devices"], deadline_ms=50.0)
    rates, acc, lat = fig.axes
    assert rates.get_ylabel() == "% of all requests" and "failed devices" in rates.get_xlabel()
    lines = {line.get_label(): line for line in lat.get_lines() if not line.get_label().startswith("_")}
    np.testing.assert_allclose(lines["p99"].get_ydata(), [24, 40, 100])
    p50 = lat.containers[0].lines[0].get_ydata()  # the errorbar's data line
    np.testing.assert_allclose(p50, [12, 20, 50])
    lo, hi = acc.get_ylim()
    assert 80 < lo < 92 and 97.5 < hi <= 102  # fitted to 92.5..97.5, not 0..100
    markers = {c.lines[0].get_marker() for c in rates.containers}
    assert len(markers) == 2  # answered and deadline met drawn differently
    plt.close(fig)


def test_axis_labels_name_units():
    assert axis_label("workload.deadline_ms") == "workload.deadline (ms)"
    assert axis_label("network.bandwidth_mbps") == "network.bandwidth (Mbps)"
    assert axis_label("failed_devices").startswith("failed devices")


def test_compare_figure_one_legend_and_distinct_strategy_lines():
    rows = []
    for s in ("vp", "vip", "single"):
        for n in range(3):
            rows.append({"strategy": s, "condition": f"failed={n}", "failed_devices": n, "replication": 0,
                         "requests": 10, "answered": 1.0, "deadline_met": 1.0, "accuracy_top1": 0.9,
                         "accuracy_topM": 1.0, "latency_p50_ms": 10.0, "latency_p99_ms": 20.0,
                         "bytes_per_request": 100.0, "macs_per_device": 1e6, "macs_total": 3e6, "devices_used": 3})
    fig = compare_figure(pd.DataFrame(rows), title="t")
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["vp", "vip", "single"]
    acc_lines = fig.axes[0].get_lines()
    styles = {(line.get_marker(), line.get_linestyle(), line.get_color()) for line in acc_lines}
    assert len(styles) == 3  # identical values, yet three distinguishable lines
    xs = [tuple(np.round(line.get_xdata(), 3)) for line in acc_lines]
    assert len(set(xs)) == 3  # and side by side, not on top of each other
    plt.close(fig)


def test_matplotlib_loads_only_when_a_plot_is_made(run_dir):
    """vip-sim run's modules (the CLI, the run, the plots module itself) leave matplotlib out; the
    first figure brings it in."""
    import subprocess
    import sys

    code = ("import sys, vip_ray.cli, vip_ray.experiment.run, vip_ray.experiment.plots; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'PIL')); assert not bad, bad; "
            f"vip_ray.experiment.plots.run_plots({str(run_dir)!r}); assert 'matplotlib.figure' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
