"""The benchmark scripts start and write their JSON (their figures are the README's business, not a test's)."""
import json
import sys
from pathlib import Path

import toy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import ablation  # noqa: E402
import vision_ceiling  # noqa: E402

TINY = dict(ace_train=12, ace_dev=4, ace_test=4, swig_train=8, swig_dev=4, swig_test=4, mnre_train=6, mnre_dev=2,
            mnre_test=2, m2e2_dev=2, m2e2_test=2)


def test_ablation_runs_the_keyword_row_and_tabulates(tmp_path):
    world = toy.generate(tmp_path / "w", seed=0, **TINY)
    out = tmp_path / "ablation.json"
    state = ablation.main(["--data", str(world), "--out", str(tmp_path / "runs"), "--json", str(out),
                           "--rows", "keyword", "--seeds", "1"])
    saved = json.loads(out.read_text())
    assert saved["results"] == state["results"] and set(saved["results"]["keyword"]["-"]) == {"dev", "test"}
    assert "| keyword |" in ablation.table(saved["results"], "test")


def test_paired_differences_are_per_seed():
    cells = lambda v: {c: v for c in ablation.CELLS}
    results = {"rmpl": {"0": {"test": cells(50.0)}, "1": {"test": cells(70.0)}},
               "joint": {"0": {"test": cells(40.0)}, "1": {"test": cells(60.0)}, "2": {"test": cells(0.0)}}}
    row = next(line for line in ablation.contrasts(results, "test").splitlines() if line.startswith("| joint"))
    assert row.count("+10.0 ± 0.0") == len(ablation.CELLS) and row.endswith("| 2 |")  # seed 2 has no rmpl: left out


def test_vision_ceiling_trains_for_its_budget_and_scores_dev_and_test(tmp_path):
    world = toy.generate(tmp_path / "w", seed=0, **TINY)
    out = vision_ceiling.main(["--data", str(world), "--checkpoint", "", "--budget-s", "2",
                               "--size", "32", "--json", str(tmp_path / "c.json")])
    assert out["steps"] >= 1 and json.loads((tmp_path / "c.json").read_text()) == out
    for split in ("dev", "test"):
        cell = out[split]["classifier"]
        assert 0 <= cell["f1"] <= 100 and cell["gold"] >= 0
