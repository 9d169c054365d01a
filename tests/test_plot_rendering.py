"""The run plots' rendering shortcuts change nothing a reader sees.

The axes are placed by fixed margins instead of ``tight_layout`` (vip_ray/experiment/canvas.py):
every text drawn — tick labels, axis labels, titles, legends, the CDF's note, a colour bar's label
— must still lie inside the figure and off the plotting area's data. The latency CDF strokes only
the corners of its step curve: the same curve as all bins, checked against numpy.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vip_ray.experiment.canvas import drawing
from vip_ray.experiment.energy_plots import STAGES, latency_breakdown_figure
from vip_ray.experiment.plots import (
    CDF_BINS,
    _steps,
    accuracy_vs_responders_figure,
    availability_timeline_figure,
    latency_cdf_figure,
)


def _post_step(x, y, at):
    """The value of a where="post" step curve through (x, y) at ``at`` (≥ x[0])."""
    return y[np.searchsorted(x, at, side="right") - 1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=60))
def test_the_corners_draw_the_same_step_curve(counts):
    x = np.arange(1, len(counts) + 1, dtype=float)
    y = np.cumsum(counts) / max(sum(counts), 1)
    xs, ys = _steps(x, y)
    assert xs[0] == x[0] and xs[-1] == x[-1] and ys[-1] == y[-1]
    at = np.linspace(x[0], x[-1], 7 * len(x))
    np.testing.assert_array_equal(_post_step(xs, ys, at), _post_step(x, y, at))
    assert len(xs) <= np.count_nonzero(np.diff(y)) + 2        # only where it changes, and the ends


def _reduced(names: list[str], reps: int = 3) -> dict:
    rng = np.random.default_rng(0)
    edges = np.linspace(0.0, 0.1, CDF_BINS + 1)
    hist = {r: np.bincount(rng.integers(200, 600, 1000), minlength=CDF_BINS)[:CDF_BINS] for r in range(reps)}
    return {"lat_edges": edges, "lat_hist": hist, "n_rep": {r: 1100 for r in range(reps)},
            "late": {r: 60 for r in range(reps)}, "unanswered": {r: 40 for r in range(reps)},
            "by_resp_n": np.array([0, 5, 900, 10_000]), "by_resp_ok": np.array([0, 2, 850, 9_700]),
            "timeline": rng.uniform(0, 1, (len(names), 40)), "per_bin": np.full(40, 10.0),
            "t_bins": np.linspace(0, 200, 41), "replications": reps}


def _ticklabels(ax) -> list:
    """The tick labels drawn: those of ticks inside the view (matplotlib keeps a few beyond it)."""
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    return [t for t in ax.get_xticklabels() if x0 - 1e-9 <= t.get_position()[0] <= x1 + 1e-9] + \
        [t for t in ax.get_yticklabels() if y0 - 1e-9 <= t.get_position()[1] <= y1 + 1e-9]


NAMES = {"five devices": ["tablet", "tv", "pi", "nx", "tx2"],
         "a city's groups": [f"neighbourhood-{i:03d}-jetson_nx (mean of 100)" for i in range(12)]}


@pytest.mark.parametrize("names", NAMES.values(), ids=NAMES.keys())
def test_every_text_of_the_run_plots_lies_inside_the_figure(names):
    red = _reduced(names)
    rng = np.random.default_rng(1)
    with drawing():   # as run_plots measures and draws them
        breakdown = latency_breakdown_figure(names, rng.uniform(0, 400, (len(names), len(STAGES))),
                                             rng.integers(1, 200_000, len(names)))
        figs = (latency_cdf_figure(red, 0.05, "smart_home"), accuracy_vs_responders_figure(red),
                availability_timeline_figure(red, names), breakdown)
        for fig in figs:
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            box = fig.bbox
            texts = [t for ax in fig.axes
                     for t in (*_ticklabels(ax), ax.xaxis.label, ax.yaxis.label, ax.title, *ax.texts)]
            texts += [t for ax in fig.axes if ax.get_legend()
                      for t in (*ax.get_legend().get_texts(), ax.get_legend().get_title())]
            drawn = [t for t in texts if t.get_visible() and t.get_text()]
            assert len(drawn) >= 8
            for t in drawn:
                ext = t.get_window_extent(renderer)
                assert (ext.x0 >= box.x0 - 0.5 and ext.y0 >= box.y0 - 0.5 and ext.x1 <= box.x1 + 0.5
                        and ext.y1 <= box.y1 + 0.5), f"{t.get_text()!r} is cut off: {ext} outside {box}"
            # the keys' labels, the notes and the bar labels are apart from one another
            boxes = [t.get_window_extent(renderer) for ax in fig.axes for t in ax.texts if t.get_text()]
            assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
            # the main axes' labels and y tick labels stay off its plotting area
            ax = fig.axes[0]
            inner = ax.get_window_extent(renderer)
            for t in (ax.xaxis.label, ax.yaxis.label, *_ticklabels(ax)):
                if t.get_visible() and t.get_text():
                    assert not t.get_window_extent(renderer).overlaps(inner), f"{t.get_text()!r} overlaps the axes"
            if fig is breakdown:   # its key stands beside the bars (inside the figure, checked above), hiding none
                stages = {label for _, label in STAGES}
                keys = [t for t in ax.texts if t.get_text() in stages]
                assert len(keys) == len(STAGES)
                assert all(t.get_window_extent(renderer).x0 > inner.x1 for t in keys)


def test_the_png_holds_the_pixels_matplotlib_would_save(tmp_path):
    """save_png drops only the alpha channel, which an opaque figure does not use: its pixels,
    decoded by PIL, are those of matplotlib's own savefig, at the figure's dpi."""
    from PIL import Image

    from vip_ray.experiment.canvas import save_png

    fig = accuracy_vs_responders_figure(_reduced(["a", "b"]))
    fig.savefig(tmp_path / "mpl.png", dpi="figure")
    png = Image.open(save_png(fig, tmp_path / "ours.png"))
    ours, theirs = np.asarray(png), np.asarray(Image.open(tmp_path / "mpl.png"))
    assert png.mode == "RGB" and png.info["dpi"] == pytest.approx((fig.dpi, fig.dpi), abs=0.05)  # px per metre
    assert ours.shape == theirs.shape[:2] + (3,) and (theirs[..., 3] == 255).all()
    np.testing.assert_array_equal(ours, theirs[..., :3])
