"""Pool store: atomic write, validating reader, clear refusals."""
import json
import shutil

import numpy as np
import pytest
import torch

from vip_ray.models import build_model
from vip_ray.pool import Pool, PoolError, list_pools, write_pool
from vip_ray.pool.store import MANIFEST_FILE


def _record(mid, model, num_classes=10):
    return {"id": mid, "role": "variant", "model": model, "family": "vp", "segment": 1, "input_size": 24,
            "nominal_input_size": 96, "width": 0.35, "last_conv_factor": 4.0, "params": 1, "macs": 1,
            "bytes": 1, "recipe": {"name": "none"}, "seed": 1, "kd": False, "cut": "relu",
            "build": {"num_classes": num_classes, "in_channels": 1, "input_size": 24}, "accuracy": 0.5,
            "top5": 0.9, "weights": f"weights/{mid}.pt"}


def _write(root, name="p", n=7, c=10, **kw):
    model = build_model("vp_v1", num_classes=c, in_channels=1, input_size=24)
    manifest = {"name": name, "created": "now", "family": "vp", "shape": "heterogeneous", "diversity": "none",
                "data": {"name": "digits", "num_classes": c, "n_test": n}, "seed": 0,
                "members": [_record("a", "vp_v1", c)], "config": {}, "versions": {}}
    logits = np.random.default_rng(0).normal(size=(n, c)).astype(np.float32)
    return write_pool(root, manifest, {"a": model.state_dict()}, {"a": logits},
                      np.arange(n) % c, np.arange(n), **kw), model, logits


def test_roundtrip_weights_only_and_bank(tmp_path):
    path, model, logits = _write(tmp_path)
    pool = Pool.open("p", tmp_path)
    np.testing.assert_array_equal(pool.logits(["a"])[0], logits)
    sd = torch.load(path / "weights/a.pt", weights_only=True)
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    rebuilt = pool.build_model("a")
    x = torch.rand(3, 1, 8, 8)
    model.eval()
    assert torch.equal(rebuilt(x), model(x))
    assert [p.name for p in list_pools(tmp_path)] == ["p"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dir left behind


def test_existing_pool_is_not_overwritten_unless_asked(tmp_path):
    path, _, logits = _write(tmp_path)
    before = (path / "bank.npz").read_bytes()
    with pytest.raises(PoolError, match="already exists.*pool.overwrite=true"):
        _write(tmp_path, n=9)
    assert (path / "bank.npz").read_bytes() == before
    _write(tmp_path, n=9, overwrite=True)
    assert len(Pool.open("p", tmp_path).labels) == 9


def test_failed_write_leaves_nothing_and_keeps_old_pool(tmp_path):
    path, _, _ = _write(tmp_path)
    with pytest.raises(KeyError):  # weights for a listed member are missing
        write_pool(tmp_path, {"name": "p", "members": [_record("zz", "vp_v1")]}, {}, {}, np.arange(3),
                   np.arange(3), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["p"]
    Pool.load(path)


@pytest.mark.parametrize("damage,reason", [
    (lambda p: (p / MANIFEST_FILE).unlink(), "no manifest.json"),
    (lambda p: (p / "weights/a.pt").unlink(), "partial pool, weights/a.pt is missing"),
    (lambda p: (p / "bank.npz").write_bytes(b"x" * 10), "bank.npz does not match its checksum"),
    (lambda p: (p / MANIFEST_FILE).write_text("{"), "corrupt manifest"),
    (lambda p: (p / MANIFEST_FILE).write_text(json.dumps({**json.loads((p / MANIFEST_FILE).read_text()),
                                                         "schema_version": 99})), "schema_version 99"),
    (lambda p: (p / MANIFEST_FILE).write_text(json.dumps({**json.loads((p / MANIFEST_FILE).read_text()),
                                                         "members": [{"id": "a"}]})), "invalid manifest at members.0"),
])
def test_reader_refuses_damaged_pool_with_path_and_reason(tmp_path, damage, reason):
    path, _, _ = _write(tmp_path)
    damage(path)
    with pytest.raises(PoolError) as e:
        Pool.load(path)
    assert str(path) in str(e.value) and reason in str(e.value)


def test_open_unknown_pool_lists_available(tmp_path, monkeypatch):
    from vip_ray.pool import store

    _write(tmp_path, name="alpha")
    with pytest.raises(PoolError, match="no pool 'beta'.*available: alpha, default$"):  # + the shipped reference
        Pool.open("beta", tmp_path)
    shutil.rmtree(tmp_path / "alpha")
    monkeypatch.setattr(store, "reference_root", lambda: tmp_path / "no_reference_pools")
    with pytest.raises(PoolError, match="train one with python -m vip_ray.tune"):
        Pool.open("beta", tmp_path)
