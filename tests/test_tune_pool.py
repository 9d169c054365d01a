"""A real (tiny) Ray Tune run writes a valid pool whose bank is the models' own predictions."""
import numpy as np
import pytest
import torch

from vip_ray.data import load_dataset
from vip_ray.pool import Pool
from vip_ray.tune.config import compose
from vip_ray.tune.runner import train_pool


@pytest.fixture(scope="module")
def tiny_pool(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    overrides = ["data=digits", "shape.segments=[1,2]", "family.baselines=[]", "train.kd=false",
                 "family.phases=[{name:scratch,epochs:1,lr:3e-3}]", f"pool.root={tmp}/pools",
                 f"tune.storage={tmp}/tune", "tune.verbose=0", "seed=7"]
    cfg = compose(overrides)
    return cfg, train_pool(cfg, log=lambda s: None)


def test_bank_equals_reloaded_models_predictions(tiny_pool):
    cfg, path = tiny_pool
    pool = Pool.load(path)
    data = load_dataset(cfg["data"])
    assert pool.manifest.data["fingerprint"] == data.fingerprint()
    np.testing.assert_array_equal(pool.labels, data.test_y.numpy())
    assert pool.manifest.ids() == ["vp_v1", "vp_v2"]
    x = data.test_x.float() / 255.0
    for mid in pool.manifest.ids():
        with torch.no_grad():
            logits = pool.build_model(mid)(x).numpy()
        np.testing.assert_allclose(pool.logits([mid])[0], logits, atol=1e-4)
        rec = pool.manifest.member(mid)
        assert rec.accuracy == pytest.approx(float((logits.argmax(1) == pool.labels).mean()), abs=1e-9)


def test_manifest_records_config_seeds_versions_and_sizes(tiny_pool):
    cfg, path = tiny_pool
    m = Pool.load(path).manifest
    assert m.seed == 7 and m.config["seed"] == 7 and m.config["data"]["name"] == "digits"
    assert {"torch", "torchvision", "ray", "python", "vip_ray"} <= set(m.versions)
    assert len({r.seed for r in m.members}) == 2
    v1, v2 = m.members
    assert (v1.input_size, v2.input_size) == (24, 32) and (v1.nominal_input_size, v2.nominal_input_size) == (96, 128)
    assert 0 < v1.macs < v2.macs and v1.params < v2.params and v1.bytes > 4 * v1.params
    assert v1.train["epochs"] == 1 and v1.train["images_per_s"] > 0


def test_existing_pool_is_reused_not_retrained(tiny_pool):
    cfg, path = tiny_pool
    before = (path / "manifest.json").read_text()
    assert train_pool(cfg, log=lambda s: None) == path
    assert (path / "manifest.json").read_text() == before


def test_existing_pool_with_a_different_config_is_refused(tiny_pool):
    from vip_ray.pool import PoolError

    cfg, path = tiny_pool
    before = (path / "manifest.json").read_text()
    with pytest.raises(PoolError, match="trained with a different config.*pool.overwrite=true"):
        train_pool({**cfg, "seed": 8}, log=lambda s: None)
    assert (path / "manifest.json").read_text() == before
