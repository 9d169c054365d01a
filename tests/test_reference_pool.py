"""The reference default pool shipped with vip_ray, and where pools live.

The shipped pool is the one every machine simulates on: its files must match the checksums
shipped beside it, it must be found from any folder without training, a damaged file must be
refused in one line, and the main job on it must give the same tables whatever torch's thread
count (the simulator never runs a model; the bank is all it reads)."""
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vip_ray.pool import (
    Pool,
    PoolError,
    pools_root,
    reference_root,
    vip_ray_home,
    write_pool,
)
from vip_ray.pool import store as store_module

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "vip_ray" / "pool" / "reference_pools"
# The shipped bank, pinned: replacing the reference pool is a deliberate change of this line
# (and of the README figures measured on it).
REFERENCE_BANK_SHA256 = "ab339f4c441478343b009350f8f8a5468c9db726ffa8fab12724dc9b4671665f"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reference_pool_files_match_the_shipped_checksums():
    assert reference_root() == REFERENCE
    lines = [ln.split("  ", 1) for ln in (REFERENCE / "SHA256SUMS").read_text().splitlines() if ln.strip()]
    listed = {rel: digest for digest, rel in lines}
    on_disk = {p.relative_to(REFERENCE).as_posix() for p in (REFERENCE / "default").rglob("*") if p.is_file()}
    assert set(listed) == on_disk  # every shipped file is covered, nothing listed is missing
    for rel, digest in listed.items():
        assert _sha256(REFERENCE / rel) == digest, rel
    manifest = json.loads((REFERENCE / "default" / "manifest.json").read_text())
    for rel, digest in manifest["checksums"].items():  # the pool format's own checksums agree
        assert _sha256(REFERENCE / "default" / rel) == digest, rel
    assert manifest["checksums"]["bank.npz"] == REFERENCE_BANK_SHA256


def test_reference_pool_is_the_default_training_config_and_a_few_megabytes():
    from vip_ray.data import load_dataset
    from vip_ray.pool.default import DEFAULT_OVERRIDES
    from vip_ray.tune.config import compose
    from vip_ray.tune.plan import plan_pool

    pool = Pool.open(REFERENCE / "default")
    cfg = compose(list(DEFAULT_OVERRIDES))
    data = load_dataset(cfg["data"])
    # built by the project's own training command with the default pool's config and seeds
    assert pool.manifest.config["plan_digest"] == plan_pool(cfg, data.num_classes, data.channels).digest()
    assert pool.manifest.data["fingerprint"] == data.fingerprint()
    np.testing.assert_array_equal(pool.labels, data.test_y.numpy())
    assert pool.manifest.ids() == ["mobilenet_v2", "vp_v1", "vp_v2", "vp_v3", "vp_v4", "vp_v5"]
    size = sum(p.stat().st_size for p in (REFERENCE / "default").rglob("*") if p.is_file())
    assert size < 20e6
    # the manifest's accuracies are the bank's (worked here from the logits, not by the pool code)
    logits = np.load(REFERENCE / "default" / "bank.npz")["logits"]
    for i, rec in enumerate(pool.manifest.members):
        assert rec.accuracy == pytest.approx(float((logits[i].argmax(1) == data.test_y.numpy()).mean()))


def test_store_location_follows_vip_ray_home_never_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("VIP_RAY_POOLS", raising=False)
    monkeypatch.delenv("VIP_RAY_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert vip_ray_home() == REPO / "results"  # running from the checkout: its results/ folder
    assert pools_root() == REPO / "results" / "pools"
    monkeypatch.setenv("VIP_RAY_HOME", str(tmp_path / "home"))
    assert pools_root() == tmp_path / "home" / "pools"
    monkeypatch.setenv("VIP_RAY_POOLS", str(tmp_path / "elsewhere"))
    assert pools_root() == tmp_path / "elsewhere"
    assert pools_root(tmp_path / "given") == tmp_path / "given"


def test_a_folder_named_like_a_pool_in_the_current_directory_is_not_taken_for_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()  # not a pool: opening "default" must not look here
    assert Pool.open("default", tmp_path / "empty_store").path == REFERENCE / "default"


def _toy_pool(root: Path, name: str, logits: np.ndarray, labels: np.ndarray) -> Path:
    import torch

    member = {"id": "a", "role": "variant", "model": "vp_v1", "family": "vp", "segment": 1, "input_size": 8,
              "nominal_input_size": 32, "width": 0.35, "depth_multiplier": 0.35, "params": 1, "macs": 1, "bytes": 1,
              "recipe": {"name": "none"}, "seed": 0, "kd": False, "cut": "relu", "build": {"num_classes": 3},
              "accuracy": 0.0, "top5": 0.0, "weights": "weights/a.pt"}
    manifest = {"name": name, "created": "now", "family": "vp", "shape": "heterogeneous", "diversity": "none",
                "data": {"name": "toy", "num_classes": 3, "n_test": len(labels), "fingerprint": "f"}, "seed": 0,
                "members": [member], "config": {}, "versions": {}}
    return write_pool(root, manifest, {"a": {"w": torch.zeros(2)}}, {"a": logits}, labels, np.arange(len(labels)))


def test_store_pool_shadows_the_reference_and_says_so(tmp_path):
    from vip_ray.experiment.pools import compare_banks, open_pool_by_name

    labels = np.array([0, 1, 2, 0])
    _toy_pool(tmp_path, "default", np.eye(3, dtype=np.float32)[[0, 1, 1, 0]], labels)
    said = []
    pool = open_pool_by_name("default", tmp_path, log=said.append)
    assert pool.path == tmp_path / "default"
    assert len(said) == 1 and "not the shipped reference" in said[0] and str(tmp_path / "default") in said[0]
    # compare_banks: by hand, local predicts [0,1,1,0] (3/4 right), the other [0,1,2,2] (3/4), agree on 2/4
    other = Pool.load(_toy_pool(tmp_path / "b", "default", np.eye(3, dtype=np.float32)[[0, 1, 2, 2]], labels))
    assert compare_banks(pool, other) == [{"member": "a", "top1_local": 0.75, "top1_reference": 0.75,
                                           "same_prediction": 0.5, "bit_identical": False}]
    assert compare_banks(pool, pool)[0]["bit_identical"] is True


@pytest.fixture
def reference_copy(tmp_path, monkeypatch):
    """The shipped reference pools, copied, with the package pointed at the copy (damage the copy only)."""
    copy = tmp_path / "reference_pools"
    shutil.copytree(REFERENCE, copy)
    monkeypatch.setattr(store_module, "reference_root", lambda: copy)
    return copy


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,reason", [
    (lambda r: _flip_byte(r / "default" / "bank.npz"), "default/bank.npz: does not match its checksum"),
    (lambda r: _flip_byte(r / "default" / "weights" / "vp_v3.pt"), "vp_v3.pt: does not match its checksum"),
    # a manifest that still parses but says something else: only SHA256SUMS can catch it
    (lambda r: (r / "default" / "manifest.json").write_text(
        (r / "default" / "manifest.json").read_text().replace('"seed": 0', '"seed": 1', 1)),
     "manifest.json: does not match its checksum"),
    (lambda r: (r / "default" / "weights" / "vp_v1.pt").unlink(), "missing from the shipped reference pool"),
])
def test_damaged_reference_file_is_refused_in_one_line(reference_copy, tmp_path, capsys, damage, reason):
    from vip_ray.cli import main

    damage(reference_copy)
    with pytest.raises(PoolError) as e:
        Pool.open("default", tmp_path / "empty_store")
    msg = str(e.value)
    assert reason in msg and "\n" not in msg and "vip-sim pools default --retrain" in msg
    assert main(["pools", "show", "default", "--root", str(tmp_path / "empty_store")]) == 2
    err = capsys.readouterr().err
    assert reason in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_pools_list_says_where_the_store_is_and_lists_the_reference(tmp_path, capsys):
    from vip_ray.cli import main

    assert main(["pools", "list", "--root", str(tmp_path / "store"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["locations"]["store"] == str((tmp_path / "store").resolve())
    assert out["locations"]["reference"] == str(REFERENCE)
    [row] = out["pools"]
    assert (row["name"], row["source"], row["status"]) == ("default", "reference", "ok")
    assert row["bank_sha256"] == REFERENCE_BANK_SHA256


def test_pools_default_refuses_settings_that_would_change_the_pool(capsys):
    from vip_ray.cli import main

    assert main(["pools", "default", "--retrain", "--set", "seed=3"]) == 2
    assert "only ray.* and tune.* settings" in capsys.readouterr().err


def test_pool_layer_imports_nothing_from_training_or_the_experiment_layer():
    upward = ("vip_ray.tune", "vip_ray.training", "vip_ray.experiment", "vip_ray.cli")
    for f in (REPO / "vip_ray" / "pool").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.startswith(upward)], f"{f.name} imports {names}"


def _run_smart_home(cwd: Path, home: Path, threads: int) -> tuple[Path, str]:
    """`vip-sim run scenarios/smart_home.yaml` as shipped, from ``cwd``, with ``threads`` torch threads."""
    out = cwd / "run"
    code = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); print('torch threads', torch.get_num_threads());"
            " from vip_ray.cli import main; sys.exit(main(sys.argv[2:]))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "VIP_RAY_HOME": str(home), "OMP_NUM_THREADS": str(threads),
           "COLUMNS": "200"}
    env.pop("VIP_RAY_POOLS", None)
    r = subprocess.run([sys.executable, "-c", code, str(threads), "run", str(REPO / "scenarios" / "smart_home.yaml"),
                        "--out", str(out)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"torch threads {threads}" in r.stdout
    return out, r.stdout + r.stderr


@pytest.mark.slow   # runs the main job in fresh processes, once per thread count
def test_smart_home_tables_identical_from_another_folder_and_any_torch_thread_count(tmp_path):
    home = tmp_path / "home"
    runs = []
    for threads in (1, 2):
        cwd = tmp_path / f"cwd{threads}"
        cwd.mkdir()
        out, text = _run_smart_home(cwd, home, threads)
        assert "building" not in text and "training" not in text  # the shipped pool: nothing trained
        assert sorted(p.name for p in cwd.iterdir()) == ["run"]  # nothing written into the current folder
        config = yaml.safe_load((out / "config.yaml").read_text())
        assert config["pool"]["path"] == str(REFERENCE / "default")
        assert config["pool"]["bank_sha256"] == REFERENCE_BANK_SHA256 == _sha256(REFERENCE / "default" / "bank.npz")
        runs.append(out)
    assert not (home / "pools").exists()  # the store was never written
    a, b = runs
    for table in ("requests.parquet", "devices.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / table), pd.read_parquet(b / table))
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in runs)
    assert sa["metrics"] == sb["metrics"]
