"""VIP's comparison benchmark (vip_ray.bench.vip_table) and the teacher's augmentation."""
import csv
import math

import numpy as np
import pytest
import torch

from vip_ray.bench import vip_table
from vip_ray.training.augment import random_shift


def test_random_shift_moves_each_image_by_at_most_max_px_and_fills_with_zeros():
    image = torch.zeros(1, 1, 3, 3)
    image[0, 0, 1, 1] = 1.0  # one bright pixel in the centre
    batch = image.repeat(400, 1, 1, 1)
    out = random_shift(batch, 1, torch.Generator().manual_seed(0))
    # the nine translations by (dy, dx) in {-1, 0, 1}^2, written out: the pixel lands at (1 + dy, 1 + dx)
    expected = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            e = torch.zeros(1, 3, 3)
            e[0, 1 + dy, 1 + dx] = 1.0
            expected.append(e)
    seen = set()
    for img in out:
        match = [i for i, e in enumerate(expected) if torch.equal(img, e)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == set(range(9))  # 400 draws: every shift shows up
    assert torch.equal(random_shift(batch, 0), batch)


def test_random_shift_draws_only_from_its_generator():
    x = torch.rand(8, 3, 28, 28)
    a = random_shift(x, 2, torch.Generator().manual_seed(5))
    b = random_shift(x, 2, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="max_px must be >= 0"):
        random_shift(x, -1)


def test_ci95_is_the_student_t_interval():
    mean, half = vip_table.ci95([1.0, 2.0, 3.0])
    # sd = 1, n = 3, t(0.975, 2) = 4.302652729911275 (tables)
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302652729911275 / math.sqrt(3))


def test_ensemble_averages_probabilities_not_votes():
    labels = np.array([0, 1])
    # the class of highest mean probability, which here is not the majority's vote
    p = np.array([
        [[0.01, 0.99], [0.55, 0.45], [0.55, 0.45]],  # mean p0 = 0.37 -> class 1 (a vote would say 0)
        [[0.20, 0.80], [0.30, 0.70], [0.90, 0.10]],  # mean p0 = 0.467 -> class 1
    ])
    logits = [np.log(p[:, i, :]) for i in range(3)]
    assert vip_table.ensemble_accuracy(logits, labels) == pytest.approx(0.5)


def _members():
    rows = []
    for seed, t, b_kd, b_no, students_kd, students_no, e_kd, e_no in (
            (0, 99.0, 97.0, 96.0, [97.5, 98.0], [96.5, 96.0], None, None),
            (1, 96.0, 95.0, 94.0, [96.5, 95.0], [95.0, 94.5], None, None)):
        rows.append({"seed": seed, "strategy": "", "kd": "", "member": "T", "role": "T", "accuracy_pct": t})
        rows.append({"seed": seed, "strategy": "", "kd": "yes", "member": "B.kd", "role": "B", "accuracy_pct": b_kd})
        rows.append({"seed": seed, "strategy": "", "kd": "no", "member": "B.nokd", "role": "B", "accuracy_pct": b_no})
        for kd, accs in (("yes", students_kd), ("no", students_no)):
            for i, a in enumerate(accs):
                rows.append({"seed": seed, "strategy": "crops", "kd": kd, "member": f"s{i}.{kd}", "role": "student",
                             "accuracy_pct": a})
    return rows


def test_teacher_check_compares_the_teacher_with_its_best_student_per_seed():
    rows = vip_table.teacher_check(_members())
    assert [(r["seed"], r["best_student"], r["margin_points"], r["teacher_beats_all"]) for r in rows] == [
        (0, "s1.yes", 1.0, True),    # 99.0 vs the best of 97, 96, 97.5, 98, 96.5, 96
        (1, "s0.yes", -0.5, False),  # 96.0 vs 96.5
    ]


def test_summary_gap_closed_and_kd_gain_by_hand():
    ensembles = {(0, "crops", True): (98.0, 2), (0, "crops", False): (97.0, 2),
                 (1, "crops", True): (95.5, 2), (1, "crops", False): (94.5, 2)}
    rows = {(r["row"], r["strategy"], r["kd"]): r for r in vip_table.summarize(_members(), ensembles, ["crops"])}
    assert set(vip_table.TABLE_COLUMNS) == set(next(iter(rows.values())))
    # ratio of means: E 96.75, B 96.0, T 97.5 -> 0.75 / 1.5 = 50 %; per seed (98-97)/(99-97), (95.5-95)/(96-95)
    assert rows[("gap_closed", "crops", "yes")]["mean"] == pytest.approx(50.0)
    assert rows[("gap_closed", "crops", "yes")]["per_seed"] == "50.000;50.000"
    # no KD: E 95.75, B 95.0, T 97.5 -> 0.75 / 2.5 = 30 % (per seed 33.3 % and 25 %)
    assert rows[("gap_closed", "crops", "no")]["mean"] == pytest.approx(30.0)
    assert rows[("gap_closed", "crops", "no")]["per_seed"] == "33.333;25.000"
    assert rows[("kd_gain_E", "crops", "")]["per_seed"] == "1.000;1.000"
    assert rows[("kd_gain_single", "crops", "")]["per_seed"] == "1.500;1.000"  # 97.75-96.25, 95.75-94.75
    assert rows[("kd_gain_B", "", "")]["mean"] == pytest.approx(1.0)
    assert rows[("single", "crops", "yes")]["per_seed"] == "97.750;95.750"
    assert rows[("best_single", "crops", "no")]["per_seed"] == "96.500;95.000"
    assert rows[("teacher_margin", "", "")]["per_seed"] == "1.000;-0.500"


def test_bad_input_is_one_line_and_exit_status_2(capsys):
    assert vip_table.main(["--strategies", "mixup"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --strategies: 'mixup' is not allowed; allowed: distinct names of filters, crops, imbalance"]
    assert vip_table.main(["--seeds", "0"]) == 2
    assert "at least 2 distinct integers" in capsys.readouterr().err
    assert vip_table.main(["--set", "family.phases=7"]) == 2
    assert capsys.readouterr().err.startswith("error: --set:")


@pytest.mark.slow
def test_quick_run_writes_the_table_and_checks_the_teacher(tmp_path):
    """The whole pipeline at toy sizes: 2 seeds x (teacher, crops and imbalance students with and without KD)."""
    assert vip_table.main(["--quick", "--workers", "1", "--strategies", "crops", "imbalance",
                           "--out-dir", str(tmp_path)], log=lambda s: None) == 0
    with open(tmp_path / "vip_table.csv") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == vip_table.TABLE_COLUMNS
    keys = {(r["row"], r["strategy"], r["kd"]) for r in table}
    for s in ("crops", "imbalance"):
        for kd in ("yes", "no"):
            assert {("single", s, kd), ("best_single", s, kd), ("E", s, kd), ("gap_closed", s, kd)} <= keys
        assert ("kd_gain_E", s, "") in keys
    assert {("T", "", ""), ("B", "", "yes"), ("B", "", "no"), ("teacher_margin", "", "")} <= keys
    assert all(r["seeds"] == "2" for r in table)
    with open(tmp_path / "vip_table_members.csv") as f:
        members = list(csv.DictReader(f))
    # 2 seeds x (T + B.kd + B.nokd + 2 strategies x 2 students x 2 KD settings)
    assert len(members) == 2 * (3 + 2 * 2 * 2)
    with open(tmp_path / "vip_table_teacher.csv") as f:
        checks = list(csv.DictReader(f))
    for c in checks:  # the check against the members file, recomputed here
        mine = [m for m in members if m["seed"] == c["seed"]]
        teacher = next(float(m["accuracy_pct"]) for m in mine if m["role"] == "T")
        best = max(float(m["accuracy_pct"]) for m in mine if m["role"] != "T")
        assert float(c["margin_points"]) == pytest.approx(teacher - best)
        assert c["teacher_beats_all"] == str(teacher > best)
    assert (tmp_path / "vip_table.png").stat().st_size > 10_000
    assert "| T (ResNet50 teacher) |" in (tmp_path / "vip_table.md").read_text()
