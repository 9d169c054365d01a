"""The answer lead (vip_ray.serve.lead): a trailing high quantile of the run's own answer paths,
times a margin, between the configured floor and the cap. No Ray."""
import numpy as np
from hypothesis import given, settings, strategies as st

from vip_ray.serve.lead import AnswerLead


def test_before_enough_paths_the_lead_is_the_start_estimate_or_the_floor():
    lead = AnswerLead(0.003, min_samples=4, start_s=0.010)
    assert lead.value() == 0.010
    for p in (0.001, 0.002, 0.001):
        lead.observe(p)
    assert lead.value() == 0.010                    # 3 < 4 paths: still the start-up estimate
    assert AnswerLead(0.003, start_s=0.001).value() == 0.003   # never below the floor


def test_the_lead_is_the_margin_times_the_quantile_of_the_last_window():
    lead = AnswerLead(0.0, quantile=0.5, margin=2.0, window=4, min_samples=1)
    for p in (0.100, 0.001, 0.002, 0.003, 0.004):   # the first path has left the window of 4
        lead.observe(p)
    # median of (1, 2, 3, 4) ms = 2.5 ms, doubled
    assert abs(lead.value() - 0.005) < 1e-12


def test_a_slow_path_raises_the_lead_at_once_and_a_cap_bounds_it():
    lead = AnswerLead(0.003, quantile=1.0, margin=1.0, min_samples=1, cap_s=0.020)
    lead.observe(0.002)
    assert lead.value() == 0.003                    # the floor
    lead.observe(0.008)
    assert lead.value() == 0.008
    lead.observe(0.500)
    assert lead.value() == 0.020                    # half the deadline, say: never more


def test_nan_and_negative_paths_are_ignored():
    lead = AnswerLead(0.001, quantile=1.0, margin=1.0, min_samples=1)
    lead.observe(float("nan"))
    lead.observe(-0.5)
    assert len(lead.paths) == 0 and lead.value() == 0.001


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 0.1), min_size=1, max_size=300), st.floats(0.5, 1.0), st.floats(1.0, 2.0),
       st.integers(1, 64))
def test_the_lead_covers_that_share_of_the_windows_paths(paths, q, margin, window):
    lead = AnswerLead(0.0, quantile=q, margin=margin, window=window, min_samples=1)
    for p in paths:
        lead.observe(p)
    recent = np.array(paths[-window:])
    # at least a share q of the window's paths fit in the lead (what makes their answers ready in time)
    assert (recent <= lead.value() + 1e-15).mean() >= q - 1.0 / len(recent)
    assert lead.value() <= margin * recent.max() + 1e-15
