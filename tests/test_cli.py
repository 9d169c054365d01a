"""`vip-sim pools ...` as a user meets them (bad input to every command: test_bad_input.py)."""
import json

import numpy as np
import pytest

from vip_ray.core.aggregation import softmax
from vip_ray.cli import main
from vip_ray.models import build_model
from vip_ray.pool import write_pool


def _member(mid, model, role, rho, depth, kd=False, recipe="none"):
    return {"id": mid, "role": role, "model": model, "family": "vp", "segment": 1, "input_size": rho,
            "nominal_input_size": rho * 4, "width": 0.35, "last_conv_factor": depth, "params": 1, "macs": 1,
            "bytes": 1, "recipe": {"name": recipe}, "seed": 1, "kd": kd, "cut": "relu",
            "build": {"num_classes": 4, "in_channels": 1, "input_size": rho}, "accuracy": 0.0, "top5": 0.0,
            "weights": f"weights/{mid}.pt"}


@pytest.fixture
def store(tmp_path):
    """A pool whose bank is chosen so every report figure can be checked by hand."""
    labels = np.array([0, 1, 2, 3, 0, 1])
    eye = np.eye(4) * 5.0
    logits = {
        "mobilenet_v2": eye[[0, 1, 2, 3, 1, 1]],   # 5/6 right
        "vp_v1": eye[[0, 1, 2, 0, 0, 2]],          # 4/6
        "vp_v2": eye[[0, 1, 3, 3, 0, 1]],          # 5/6
        "vp_v3": eye[[0, 2, 2, 3, 0, 1]],          # 5/6
    }
    members = [_member("mobilenet_v2", "mobilenet_v2", "baseline", 56, 1.0)] + [
        _member(f"vp_v{i}", f"vp_v{i}", "variant", 16 + 8 * i, 3.0 + i) for i in (1, 2, 3)]
    weights = {m["id"]: build_model(m["model"], 4, in_channels=1, input_size=m["input_size"]).state_dict()
               for m in members}
    manifest = {"name": "toy", "created": "now", "family": "vp", "shape": "heterogeneous", "diversity": "none",
                "data": {"name": "toy", "num_classes": 4, "n_test": 6}, "seed": 0, "members": members,
                "config": {}, "versions": {}}
    write_pool(tmp_path / "pools", manifest, weights, logits, labels, np.arange(6))
    return tmp_path, logits, labels


def test_pools_show_json_report_matches_hand_computation(store, capsys):
    tmp, logits, labels = store
    assert main(["pools", "show", "toy", "--root", str(tmp / "pools"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["manifest"]["name"] == "toy"
    rep = out["report"]
    acc = {m["id"]: m["top1"] for m in rep["members"]}
    assert acc == {"mobilenet_v2": 5 / 6, "vp_v1": 4 / 6, "vp_v2": 5 / 6, "vp_v3": 5 / 6}
    ens = rep["ensembles"]["all"]
    avg = np.mean([softmax(logits[k]) for k in ("vp_v1", "vp_v2", "vp_v3")], axis=0)
    assert ens["vip_average"]["top1"] == pytest.approx(float((avg.argmax(1) == labels).mean()))
    assert ens["vip_average"]["top1"] == 1.0   # every sample has a 2-of-3 majority for the truth
    # pairwise disagreement of the top-1 labels: v1/v2 3 of 6, v1/v3 3 of 6, v2/v3 2 of 6
    d = np.array(ens["disagreement"])
    np.testing.assert_allclose(d, [[0, 3 / 6, 3 / 6], [3 / 6, 0, 2 / 6], [3 / 6, 2 / 6, 0]], atol=1e-4)
    assert ens["disagreement_mean"] == pytest.approx(8 / 18)
    assert set(ens["vp_topk"]) == {"1", "2", "5", "all"}
    assert rep["bet"] == {"E": ens["vp_topk"]["2"]["top1"], "B": 5 / 6}


def test_pools_show_writes_plots_and_list_shows_damage(store, capsys):
    tmp, _, _ = store
    assert main(["pools", "show", "toy", "--root", str(tmp / "pools"), "--plots", str(tmp / "plots")]) == 0
    text = capsys.readouterr().out
    assert "VIP average" in text and "VP scaled top-k, k=2" in text
    assert sorted(p.name for p in (tmp / "plots").iterdir()) == ["bet_per_strategy.png", "toy_accuracy_vs_k.png"]
    (tmp / "pools" / "toy" / "bank.npz").write_bytes(b"broken")
    assert main(["pools", "list", "--root", str(tmp / "pools")]) == 0
    assert "refused" in capsys.readouterr().out
    assert main(["pools", "show", "toy", "--root", str(tmp / "pools")]) == 2
    assert "bank.npz does not match its checksum" in capsys.readouterr().err


def test_run_summary_prints_stage_means_in_ms_and_energy_in_joules(tmp_path):
    """The breakdown's stage means (seconds in summary.json) print in ms, energies in J."""
    from rich.console import Console

    from vip_ray.cli import _print_summary

    metrics = {"latency_p50_s": 0.01305, "t_down_s_mean": 0.00747, "energy_per_request_j": 1.28,
               "deadline_met": 0.5, "responders_mean": 4.87}
    (tmp_path / "summary.json").write_text(json.dumps({
        "scenario": "s", "strategy": "vp", "pool": "p", "replications": 1, "engine": "loop",
        "metrics": {k: {"mean": v, "ci95": None} for k, v in metrics.items()}}))
    console = Console(width=200, record=True)
    _print_summary(tmp_path, console)
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in console.export_text().splitlines() if line.count("│") >= 3}
    assert rows == {"latency_p50": "13.05 ms", "t_down mean": "7.47 ms", "energy_per_request": "1.28 J",
                    "deadline_met": "50.00 %", "responders_mean": "4.87"}


def test_stdout_to_stderr_moves_file_descriptor_writes_and_restores_them(tmp_path):
    """What a subprocess or a C library writes on fd 1 meanwhile lands on fd 2; afterwards fd 1 is back."""
    import subprocess
    import sys

    code = ("import os, sys; from vip_ray.cli import stdout_to_stderr\n"
            "with stdout_to_stderr():\n    os.write(1, b'noise\\n'); print('more noise')\n"
            "print('{\"ok\": true}')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert proc.stdout == '{"ok": true}\n'
    assert proc.stderr == "noise\nmore noise\n"
