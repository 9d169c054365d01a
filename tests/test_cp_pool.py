"""Class-parallel pools (sensAI): a real Tune-trained CP pool, its manifest, bank contract and figures."""
import hashlib
import json

import numpy as np
import pytest
import torch

from vip_ray.core.aggregation import cp_aggregate, softmax
from vip_ray.class_groups import confusability_groups, validation_indices
from vip_ray.data import load_dataset
from vip_ray.models import build_model, profile_model
from vip_ray.pool import Pool, PoolError
from vip_ray.pool.report import cp_ensemble_accuracy, pool_report
from vip_ray.tune.runner import train_pool


@pytest.fixture(scope="module")
def cp(small_cp_pool):
    cfg, path = small_cp_pool
    return cfg, Pool.load(path), load_dataset(cfg["data"])


@pytest.fixture(scope="module")
def group_outputs(cp):
    """Each group model's own |g|+1 logits on the real test images."""
    _, pool, data = cp
    x = data.test_x.float() / 255.0
    with torch.no_grad():
        return {mid: pool.build_model(mid)(x).numpy() for mid in pool.manifest.ids("cp_group")}


def test_manifest_roles_and_classes_partition_the_classes(cp):
    cfg, pool, data = cp
    m = pool.manifest
    assert m.shape == "class_parallel" and m.ids() == ["vp_v1.g0", "vp_v1.g1", "vp_v1.g2"]
    assert {r.role for r in m.members} == {"cp_group"}
    groups = [r.classes for r in m.members]
    assert sorted(c for g in groups for c in g) == list(range(10))
    assert sorted(map(len, groups), reverse=True) == [4, 3, 3]
    assert m.config["class_parallel"]["grouping"] == "confusability" and m.config["class_parallel"]["init"] == "probe"
    assert {r.train["init"] for r in m.members} == {"probe"}  # sensAI: decomposed from the trained C-way probe
    assert m.config["class_parallel"]["groups"] == groups
    for r in m.members:
        assert r.build["num_classes"] == len(r.classes) + 1
        head = profile_model(build_model("vp_v1", num_classes=len(r.classes) + 1, in_channels=1, input_size=24))
        assert (r.macs, r.params) == (head["macs"], head["params"])  # measured with the |g|+1-way head
        assert r.macs < profile_model(build_model("vp_v1", num_classes=10, in_channels=1, input_size=24))["macs"]
        assert len(r.train["class_weights"]) == len(r.classes) + 1
        assert r.train["class_weights"][-1] < min(r.train["class_weights"][:-1])  # "other" dominates: weighs less
    assert pool.manifest.data["fingerprint"] == data.fingerprint()


def test_groups_come_from_the_probes_confusion_on_the_validation_split(cp):
    cfg, pool, data = cp
    info = pool.manifest.config["class_parallel"]
    _, val = validation_indices(data.train_y.numpy(), 0.1, seed=cfg["seed"])
    assert info["probe"]["n_val"] == len(val) == 145  # 10 % of every class of the 1,438 training digits
    counts = np.bincount(data.train_y.numpy()[val], minlength=10)
    assert counts.min() >= 14 and counts.max() <= 15  # stratified, drawn from the train split only
    assert info["probe"]["val_indices_sha256"] == hashlib.sha256(val.astype(np.int64).tobytes()).hexdigest()[:16]
    conf = np.array(info["probe"]["soft_confusion"])
    np.testing.assert_allclose(conf.sum(1), 1.0, atol=1e-4)
    assert info["probe"]["val_accuracy"] > 0.6  # a trained probe (chance: 10 %), so its confusion means something
    groups_again = confusability_groups(conf, 3)
    assert sorted(groups_again) == sorted(info["groups"])


def test_bank_rows_are_the_group_models_log_probabilities(cp, group_outputs):
    _, pool, data = cp
    c = pool.num_classes
    for mid, z in group_outputs.items():
        rec = pool.manifest.member(mid)
        rows = pool.logits([mid])[0].astype(np.float64)
        np.testing.assert_allclose(np.exp(rows).sum(1), 1.0, atol=1e-5)  # softmax(row) = exp(row)
        np.testing.assert_allclose(softmax(rows).sum(1), 1.0, atol=1e-9)
        lsm = torch.log_softmax(torch.from_numpy(z).double(), dim=1).numpy()
        k = len(rec.classes)
        np.testing.assert_allclose(rows[:, rec.classes], lsm[:, :k], atol=1e-4)
        rest = [x for x in range(c) if x not in rec.classes]
        np.testing.assert_allclose(rows[:, rest], np.repeat(lsm[:, k:] - np.log(c - k), len(rest), 1), atol=1e-4)
        assert rec.accuracy == pytest.approx(float((rows.argmax(1) == pool.labels).mean()))


def test_cp_accuracy_from_the_bank_equals_direct_evaluation_of_the_group_models(cp, group_outputs):
    _, pool, _ = cp
    n, c = len(pool.labels), pool.num_classes
    direct = np.full((n, c), np.nan)
    for mid, z in group_outputs.items():
        p = softmax(z.astype(np.float64))
        direct[:, pool.manifest.member(mid).classes] = p[:, :-1]  # the owner's in-group probabilities
    assert not np.isnan(direct).any()
    ids = pool.manifest.ids("cp_group")
    scores = cp_aggregate(softmax(pool.logits(ids).astype(np.float64)).transpose(1, 0, 2),
                          responded=np.ones((n, len(ids)), bool), classes=pool.class_masks(ids))
    np.testing.assert_allclose(scores, direct, atol=1e-5)
    acc = cp_ensemble_accuracy(pool)
    assert acc["top1"] == pytest.approx(float((direct.argmax(1) == pool.labels).mean()))
    assert acc["top1"] > 0.6  # well above chance (10 %): the groups' answers combine into a classifier
    # without the group that owns a sample's label, the master has no answer
    partial = cp_aggregate(softmax(pool.logits(ids).astype(np.float64)).transpose(1, 0, 2),
                           responded=np.tile([True, True, False], (n, 1)), classes=pool.class_masks(ids))
    assert np.isnan(partial).all()


def test_report_shows_cp_figures_not_vp_ensembles(cp, group_outputs, tmp_path, capsys):
    _, pool, _ = cp
    rep = pool_report(pool)
    assert rep["method"] == "cp" and rep["ensembles"] == {}
    assert rep["bet"] == {"E": rep["cp"]["ensemble"]["top1"]}
    for g in rep["cp"]["groups"]:
        rec = pool.manifest.member(g["id"])
        z = group_outputs[g["id"]]
        target = np.array([rec.classes.index(y) if y in rec.classes else len(rec.classes) for y in pool.labels])
        assert g["group_top1"] == pytest.approx(float((z.argmax(1) == target).mean()), abs=2 / len(target))
        assert 0.0 <= g["in_group"] <= 1.0 and 0.0 <= g["other"] <= 1.0
    from vip_ray.cli import main

    assert main(["pools", "show", str(pool.path), "--plots", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "CP ensemble" in out and f"{rep['cp']['ensemble']['top1']:.2%}" in out
    assert main(["pools", "show", str(pool.path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["report"]["cp"]["groups"][0]["classes"] == pool.manifest.members[0].classes
    assert main(["pools", "list", "--root", str(pool.path.parent)]) == 0  # its best top-1 is the CP ensemble's
    listed = capsys.readouterr().out
    assert "small-cp" in listed and f"{rep['cp']['ensemble']['top1']:.2%}" in listed


def test_rerun_of_the_same_config_reuses_the_pool(small_cp_pool):
    cfg, path = small_cp_pool
    before = (path / "manifest.json").read_text()
    logs = []
    assert train_pool(cfg, log=logs.append) == path
    assert any("already exists" in line for line in logs)
    assert (path / "manifest.json").read_text() == before


def test_reader_refuses_overlapping_class_groups(cp, tmp_path):
    import shutil

    from vip_ray.pool.store import MANIFEST_FILE

    _, pool, _ = cp
    copy = tmp_path / "bad"
    shutil.copytree(pool.path, copy)
    raw = json.loads((copy / MANIFEST_FILE).read_text())
    raw["members"][1]["classes"] = raw["members"][1]["classes"][:-1] + [raw["members"][0]["classes"][0]]
    (copy / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(PoolError, match="owned by another group too"):
        Pool.load(copy)


@pytest.mark.slow   # trains models (the fast lane: -m "not ray and not slow")
def test_default_cp_pool_uses_the_default_pools_data_split_and_seed():
    from vip_ray.pool.default import DEFAULT_CP_OVERRIDES, DEFAULT_OVERRIDES
    from vip_ray.tune.config import compose

    a, b = compose(list(DEFAULT_OVERRIDES)), compose(list(DEFAULT_CP_OVERRIDES))
    assert a["data"] == b["data"] and a["seed"] == b["seed"] and b["shape"]["name"] == "class_parallel"
    da, db = load_dataset(a["data"]), load_dataset(b["data"])
    assert da.fingerprint() == db.fingerprint()
    np.testing.assert_array_equal(da.test_indices, db.test_indices)
    np.testing.assert_array_equal(da.test_y.numpy(), db.test_y.numpy())


@pytest.fixture(scope="module")
def cp_member(tmp_path_factory):
    """One planned group model (digits, balanced groups of VP V1) and a saved 10-way "probe"."""
    from vip_ray.tune.config import compose
    from vip_ray.tune.plan import plan_pool

    cfg = compose(["data=digits", "shape=class_parallel", "shape.grouping=balanced", "shape.groups=3",
                   "shape.model=vp_v1", "family.baselines=[]", "train.batch_size=32"])
    data = load_dataset(cfg["data"])
    member = plan_pool(cfg, data.num_classes, data.channels).members[1]  # classes [4, 5, 6]
    probe = build_model("vp_v1", num_classes=10, in_channels=1, input_size=24)
    path = tmp_path_factory.mktemp("probe") / "probe.pt"
    torch.save(probe.state_dict(), path)
    return cfg, data, member, probe, str(path)


def _train(cfg, data, members, epochs, **kw):
    from vip_ray.training.trainer import train_group

    phases = [{"name": "scratch", "epochs": epochs, "lr": 3e-3, "freeze_backbone": False, "schedule": "cosine"}]
    return train_group({"members": members, "data": cfg["data"], "train": cfg["train"], "phases": phases,
                        "threads": 1}, data=data, **kw)


def test_group_model_starts_from_the_probe_and_is_calibrated_by_its_class_weights(cp_member):
    cfg, data, member, probe, path = cp_member
    assert member["classes"] == [4, 5, 6]
    out = _train(cfg, data, [{**member, "init_from": path}], epochs=0)
    weights = out["weights"][member["id"]]
    for k, v in probe.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(weights[k], v), k
    w = np.array(out["stats"][member["id"]]["class_weights"])
    counts = np.bincount(np.where(np.isin(data.train_y.numpy(), [4, 5, 6]), data.train_y.numpy() - 4, 3))
    np.testing.assert_allclose(w, counts.sum() / (4 * counts), rtol=1e-5)
    # untrained head: bias 0, so after calibration it is exactly −log w
    np.testing.assert_allclose(weights["head.0.bias"].numpy(), -np.log(w), rtol=1e-5)
    assert out["stats"][member["id"]]["init"] == "probe"


@pytest.mark.slow   # trains models (the fast lane: -m "not ray and not slow")
def test_group_model_resumes_exactly_from_an_epoch_checkpoint(cp_member):
    import copy

    cfg, data, member, _, _ = cp_member
    saved = []
    full = _train(cfg, data, [member], epochs=2, report=lambda row, state: saved.append(copy.deepcopy(state)))
    assert 0.5 < full["history"][-1][f"acc/{member['id']}"] <= 1.0  # the 4-way decision, calibrated
    resumed = _train(cfg, data, [member], epochs=2, restore=saved[0])
    np.testing.assert_array_equal(full["logits"][member["id"]], resumed["logits"][member["id"]])
    assert full["logits"][member["id"]].shape == (len(data.test_y), 10)  # bank rows in the full class space
