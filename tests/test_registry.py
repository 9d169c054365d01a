"""One registry helper (``vip_ray.core.registry.Registry``) for every pluggable name: models,
strategies, placement policies, aggregators, engines. Each registered name is exercised here or in
its own module's parametrized test (every model builds: test_models.py; every strategy on every
engine it declares: test_engines.py); the names reach the CLI (``vip-sim names``) and the scenario
schema's messages. Expected values are worked by hand in the comments (no Ray, no pool, no torch
except where models are listed)."""
import json

import numpy as np
import pytest

import vip_ray.core.aggregation as aggregation
import vip_ray.placement.base as placement_base
from vip_ray.core.aggregation import AGGREGATORS, get_aggregator, register_aggregator
from vip_ray.core.engine import ENGINES
from vip_ray.core.registry import Registry, UnknownName
from vip_ray.placement import PLACEMENTS, DeviceInfo, PlacementError, VariantInfo, place, register_placement
from vip_ray.scenario import ScenarioError, StrategySpec
from vip_ray.scenario.schema import validate
from vip_ray.strategies import STRATEGIES

# --- the helper itself -----------------------------------------------------------------------------------------


def test_lazy_entries_import_on_first_get_and_unknown_names_list_the_allowed_ones():
    reg = Registry("widget")
    reg.register("join", "os.path:join")            # lazy: a string until first use
    reg.register("b_sep", "os.path:sep")

    @reg.register("a_direct")
    def direct():
        return 1

    assert reg.names() == ["a_direct", "b_sep", "join"] and len(reg) == 3 and "join" in reg
    import os.path

    assert reg.get("join") is os.path.join and reg["b_sep"] == os.path.sep
    with pytest.raises(UnknownName) as e:
        reg.get("jion")
    assert str(e.value) == "unknown widget 'jion'; allowed: a_direct, b_sep, join (did you mean 'join'?)"
    assert isinstance(e.value, KeyError) and e.value.allowed == ["a_direct", "b_sep", "join"]
    assert [1, 2] not in reg                         # an unhashable name (a YAML list) is simply not a name
    with pytest.raises(UnknownName, match="unknown widget \\[1, 2\\]"):
        reg.check([1, 2])


def test_ordered_registry_keeps_registration_order_and_copies_are_independent():
    reg = Registry("model", ordered=True)
    for n in ("v2", "v10", "a"):
        reg.register(n, n.upper())
    assert reg.names() == ["v2", "v10", "a"]          # not sorted: the table's order
    other = reg.copy()
    other.register("z", "Z")
    assert "z" in other and "z" not in reg and other.names() == ["v2", "v10", "a", "z"]


def test_every_kind_is_a_registry():
    from vip_ray.models import MODELS, list_models

    for reg, kind in ((MODELS, "model"), (STRATEGIES, "strategy"), (PLACEMENTS, "placement policy"),
                      (AGGREGATORS, "aggregator"), (ENGINES, "engine")):
        assert isinstance(reg, Registry) and reg.kind == kind and len(reg) > 0
    assert MODELS.names() == list_models() and MODELS.names()[:2] == ["vp_v1", "vp_v2"]  # VP Table II order


# --- the names reach the CLI -----------------------------------------------------------------------------------


def test_vip_sim_names_lists_every_registry(capsys):
    from vip_ray.cli import main
    from vip_ray.control import POLICIES
    from vip_ray.models import MODELS

    assert main(["names", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == {"strategies": STRATEGIES.names(), "engines": ENGINES.names(), "placements": PLACEMENTS.names(),
                      "aggregators": AGGREGATORS.names(), "models": MODELS.names(), "policies": POLICIES.names()}
    assert {"vp", "vip", "single", "mp", "cp"} <= set(listed["strategies"])
    assert listed["placements"] == ["capacity", "diverse", "round_robin"]


def test_a_newly_registered_placement_is_listed_by_the_cli(monkeypatch, capsys):
    from vip_ray.cli import main

    monkeypatch.setattr(placement_base, "PLACEMENTS", PLACEMENTS.copy())
    monkeypatch.setattr("vip_ray.placement.PLACEMENTS", placement_base.PLACEMENTS)
    register_placement("all_first")(lambda devices, variants, *, deadline_s: [0] * len(devices))
    assert main(["names", "placements"]) == 0
    assert "placements (placement.policy): all_first, capacity, diverse, round_robin" in capsys.readouterr().out


# --- the names reach the scenario schema -----------------------------------------------------------------------


def test_schema_takes_the_aggregators_registered_now_and_lists_them_for_a_wrong_one(monkeypatch):
    monkeypatch.setattr(aggregation, "AGGREGATORS", AGGREGATORS.copy())
    with pytest.raises(ScenarioError) as e:
        validate(StrategySpec, {"aggregator": "median"}, file="s.yaml")
    assert str(e.value) == "s.yaml: aggregator: unknown aggregator 'median'; allowed: cp, first, majority, vip, vp"

    register_aggregator("median")(lambda probs, *, responded=None, **_: np.median(probs, axis=1))
    assert validate(StrategySpec, {"aggregator": "median"}, file="s.yaml").aggregator == "median"
    with pytest.raises(ScenarioError, match="allowed: cp, first, majority, median, vip, vp"):
        validate(StrategySpec, {"aggregator": "mean"}, file="s.yaml")


# --- every aggregator follows its contract ---------------------------------------------------------------------

# two requests, three devices, three classes; request 1: nobody answered
PROBS = np.array([[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.5, 0.3]],
                  [[0.3, 0.3, 0.4], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]]])
ALL = np.array([[True, True, True], [False, False, False]])
VP_WEIGHTS = np.array([1.0, 0.5, 2.0])
OWNERS = np.eye(3, dtype=bool)  # cp: device (group) d owns class d


def _vp_by_hand() -> np.ndarray:
    # VP §III-D with k = all: softmax each reply, weight by eq. 1, sum, softmax
    e = np.exp(PROBS[0])
    dense = e / e.sum(axis=1, keepdims=True)
    s = np.exp((VP_WEIGHTS[:, None] * dense).sum(axis=0))
    return s / s.sum()


#: name -> (extra keyword arguments, request 0's expected aggregate, worked by hand)
EXAMPLES = {
    "vip": ({}, np.array([1.0, 1.3, 0.7]) / 3),                      # the mean of the three rows
    "first": ({}, np.array([0.7, 0.2, 0.1])),                        # device 0's row
    "majority": ({}, np.array([1.0, 2.0, 0.0]) / 3),                 # top-1 votes 0, 1, 1 -> shares (+1e-6 ties)
    "cp": ({"classes": OWNERS}, np.array([0.7, 0.6, 0.3])),           # class c scored by its owner d = c
    "vp": ({"k": None, "weights": VP_WEIGHTS}, _vp_by_hand()),
}


def test_every_registered_aggregator_has_a_worked_example():
    assert sorted(EXAMPLES) == AGGREGATORS.names()


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_aggregator_contract(name):
    """(B, V, C) probabilities + (B, V) responders -> (B, C); a row nobody answered is NaN."""
    kwargs, expected = EXAMPLES[name]
    out = get_aggregator(name)(PROBS, responded=ALL, **kwargs)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out[0], expected, atol=1e-5)
    assert np.isnan(out[1]).all()
    assert AGGREGATORS.get(name).doc  # a one-line description for listings


def test_aggregators_ignore_devices_that_did_not_answer():
    only_0_and_1 = np.array([[True, True, False], [False, False, False]])
    np.testing.assert_allclose(get_aggregator("vip")(PROBS, responded=only_0_and_1)[0], [0.4, 0.4, 0.2])
    first = get_aggregator("first")(PROBS, responded=np.array([[False, True, True], [True, False, False]]))
    np.testing.assert_allclose(first, [[0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
    # cp needs every class's owner: without device 2 class 2 has none -> NaN
    assert np.isnan(get_aggregator("cp")(PROBS, responded=only_0_and_1, classes=OWNERS)[0]).all()


# --- every placement policy places a small world ---------------------------------------------------------------

# three variants (MACs, bytes, accuracy) and three devices; deadline 20 ms, margin 0.8 -> 16 ms budget
VARIANTS = [VariantInfo(0, "v0", "vp_v1", macs=10e6, bytes=1.0e6, accuracy=0.80),
            VariantInfo(1, "v1", "vp_v2", macs=20e6, bytes=1.5e6, accuracy=0.85),
            VariantInfo(2, "v2", "vp_v3", macs=40e6, bytes=2.0e6, accuracy=0.90)]
DEVICES = [DeviceInfo("slow", macs_per_s=1e9),    # 10 / 20 / 40 ms: only v0 fits
           DeviceInfo("fast", macs_per_s=10e9),   # 1 / 2 / 4 ms: all fit
           DeviceInfo("mid", macs_per_s=2e9)]     # 5 / 10 / 20 ms: v0, v1 fit

#: policy -> the placement worked by hand
PLACED = {
    # fastest first, each the most accurate fitting variant not used yet: fast v2, mid v1, slow v0
    "capacity": [0, 2, 1],
    # device order, members in pool order skipping those that miss the budget: slow v0, fast v1,
    # mid: v2 misses (20 ms) -> next in the cycle, v0
    "diverse": [0, 1, 0],
    "round_robin": [0, 1, 2],  # variant i mod V on device i
}


def test_every_registered_placement_has_a_worked_example():
    assert sorted(PLACED) == PLACEMENTS.names()


@pytest.mark.parametrize("policy", PLACEMENTS.names())
def test_placement_policy_places_the_small_world(policy):
    assert place(policy, DEVICES, VARIANTS, deadline_s=0.020) == PLACED[policy]


def test_unknown_placement_lists_the_policies():
    with pytest.raises(PlacementError) as e:
        place("capacty", DEVICES, VARIANTS, deadline_s=0.02)
    assert str(e.value) == ("unknown placement policy 'capacty'; allowed: capacity, diverse, round_robin "
                            "(did you mean 'capacity'?)")


def test_models_registry_refuses_a_second_registration_of_a_name():
    from vip_ray.models import ModelSpec, model_spec, register_model

    with pytest.raises(ValueError, match="'vp_v1' is already registered"):
        register_model(ModelSpec("vp_v1", "vp", "variant", 1, 96, 0.35, 4.0))(lambda *a, **k: None)
    with pytest.raises(KeyError, match="unknown model 'vp_v9'; allowed: vp_v1, vp_v2"):
        model_spec("vp_v9")
