"""The experiment scripts start and write their JSON (their figures are the business of experiments/*.md, not
a test's). Run from the repository root: ``python -m pytest experiments/test_experiments.py``."""
import json
from pathlib import Path

import pytest

import ablation
import grounding
import gpu_run
import toy
import vision_ceiling

# big enough for the scripts' default batch of 32 (train.py refuses a batch larger than its data)
TINY = dict(ace_train=24, ace_dev=4, ace_test=4, swig_train=16, swig_dev=4, swig_test=4, mnre_train=12, mnre_dev=2,
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


@pytest.mark.parametrize("diffs, beyond", [
    ([1.0, 2.0, 3.0], False),     # t = 2 / (1 / sqrt 3) = 3.5 < 4.30 (95%, 2 degrees of freedom)
    ([10.0, 11.0, 12.0], True),   # t = 19
    ([-5.0, -5.0, -5.0], True),   # no spread at all
    ([4.0], False),               # one seed: no noise estimate, never beyond it
])
def test_paired_t_marks_differences_beyond_seed_noise(diffs, beyond):
    assert ablation.paired(diffs).endswith("*") is beyond


def test_ablation_trains_the_grounding_rows_with_a_matched_budget(tmp_path):
    """The grounded pair (rmpl's models, two link rules) and the matched control, at a few steps."""
    world = toy.generate(tmp_path / "w", seed=0, **TINY)
    rows = "rmpl,grounded,no_relation_matched"
    state = ablation.main(["--data", str(world), "--out", str(tmp_path / "runs"), "--json",
                           str(tmp_path / "a.json"), "--rows", rows, "--jobs", "2",
                           "--seeds", "1", "--stage1-steps", "4", "--stage2-steps", "2"])
    s1, s2 = state["budgets"]["matched_steps"]
    assert 1 <= s1 < 4 and s2 == 2    # stage 1 gives the relation task's share back; stage 2 has none
    assert set(state["results"]) == set(rows.split(","))
    runs = tmp_path / "runs"
    assert not (runs / "grounded").exists()   # scored on rmpl's models
    rmpl, grounded = (state["results"][row][next(iter(state["results"][row]))] for row in ("rmpl", "grounded"))
    for split in ("dev", "test"):  # one model: only the link rule, so only the multimedia cells, may differ
        assert {c: v for c, v in grounded[split].items() if not c.startswith("multimedia")} == \
            {c: v for c, v in rmpl[split].items() if not c.startswith("multimedia")}
    info = json.loads((runs / "no_relation_matched" / "seed0" / "stage1" / "rmpl.json").read_text())
    assert info["step"] == s1 and "relation" not in info["tasks"]
    out = grounding.main(["--checkpoint", str(runs / "rmpl" / "seed0" / "stage2"), "--data", str(world)])
    presence = next(iter(out.values()))["presence"]
    assert presence["present"] + presence["absent"] > 0 and 0 <= presence["greedy_accuracy"] <= 100


@pytest.mark.parametrize("pos, neg, auc", [
    ([2.0, 3.0], [1.0], 1.0), ([1.0], [2.0, 3.0], 0.0), ([1.0, 3.0], [2.0], 0.5), ([1.0], [1.0], 0.5),
    ([1.0], [], None),
])
def test_roc_auc_known_answers(pos, neg, auc):
    assert grounding.roc_auc(pos, neg) == auc


def test_the_presence_decision_is_the_first_box_tailed_relation():
    text_first = ["<rel:/per/org/member_of>", "<head>", "Hana", "<tail>", "Union",
                  "<rel:/per/misc/present_in>", "<head>", "Hana", "<tail>", "<loc_3>", "<loc_4>", "<loc_9>", "<loc_9>"]
    assert grounding.decision_position(text_first) == 5
    assert grounding.decision_position(["<rel:None>", "<head>", "Ivan", "<tail>", "<loc_1>"] * 2) == 0
    assert grounding.decision_position(text_first[:5]) is None   # no figure: nothing to decide


def test_peers_writes_the_gold_as_predictions_that_score_100(tmp_path, capsys):
    import evaluate
    import peers
    world = toy.generate(tmp_path / "w", seed=0, **TINY)
    gold_dir = world / "m2e2" / "test"
    peers.main(["gold", str(gold_dir)])
    (tmp_path / "gold.jsonl").write_text(capsys.readouterr().out)
    evaluate.main(["--gold", str(gold_dir), "--pred", str(tmp_path / "gold.jsonl"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert all(result[c]["f1"] == 100.0 for c in evaluate.CELLS if result[c]["gold"])


@pytest.mark.parametrize("system", ["mmutf", "unicl", "gold"])
def test_peers_on_a_missing_directory_is_one_line_and_writes_nothing(tmp_path, capsys, system):
    import peers
    with pytest.raises(SystemExit) as exit:
        peers.main([system, str(tmp_path / "nope"), "--out", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith(f"error: {system} ") and len(err.splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists()


def test_gpu_run_records_a_failed_part_and_runs_the_rest(tmp_path):
    """On a machine without CUDA the two CUDA parts fail, are recorded, and the default run and the
    CPU run still happen (2 steps each here)."""
    world = toy.generate(tmp_path / "w", seed=0, **TINY)
    res = gpu_run.main(["--work", str(tmp_path / "g"), "--data", str(world), "--json", str(tmp_path / "g.json"),
                        "--steps", "2", "--max-steps", "2"])
    assert json.loads((tmp_path / "g.json").read_text()) == res
    cuda = ["cuda", "ddp_nccl"] if not res["env"]["cuda"] else []
    assert all(res[k]["rc"] != 0 and "tail" in res[k] for k in cuda)
    assert all(res[k]["rc"] == 0 for k in ("stage1", "stage2", "evaluate_test", "evaluate_dev", "cpu"))
    assert set(res["evaluate_test"]["f1"]) == set(ablation.CELLS) and res["cpu"]["window"] == [2, 2]
    assert Path(res["stage1"]["log"]).read_text().count("stage 1 done") == 1


def test_vision_ceiling_trains_for_its_budget_and_scores_dev_and_test(tmp_path):
    world = toy.generate(tmp_path / "w", seed=0, **TINY)
    out = vision_ceiling.main(["--data", str(world), "--checkpoint", "", "--budget-s", "2",
                               "--size", "32", "--json", str(tmp_path / "c.json")])
    assert out["steps"] >= 1 and json.loads((tmp_path / "c.json").read_text()) == out
    for split in ("dev", "test"):
        cell = out[split]["classifier"]
        assert 0 <= cell["f1"] <= 100 and cell["gold"] >= 0


def test_presence_pairs_are_the_first_figure_relation_of_each_name():
    """Anna: her figure, then another (present); Boris: another figure only (absent); Chen: text
    only (nothing to decide)."""
    import grounding_ceiling
    import schema as S
    words = ("Anna", "and", "Boris", "with", "Chen", ".")
    anna, boris, chen = S.Span(0, 1), S.Span(2, 3), S.Span(4, 5)
    fig1, fig2 = S.Box(0, 0, 10, 20), S.Box(20, 0, 30, 20)
    rels = (S.Relation("None", anna, fig2), S.Relation("/per/per/couple", anna, boris),
            S.Relation("None", boris, fig1), S.Relation("/per/misc/present_in", anna, fig1),
            S.Relation("None", chen, boris))
    ex = S.RelationExample("x", words, rels, S.Image("x", (40, 40)))
    assert grounding_ceiling.presence_pairs(ex) == [("Anna", True), ("Boris", False)]


def test_hflip_mirrors_only_the_flagged_pictures_inside_their_width():
    import grounding_ceiling
    import torch
    x = torch.arange(8.0).view(2, 1, 1, 4).expand(2, 3, 1, 4)    # (B, 3, 1, 4): columns 0 1 2 3
    out = grounding_ceiling.hflip(x, [3, 3], torch.tensor([True, False]))
    assert out[0, 0, 0].tolist() == [2, 1, 0, 3] and out[1, 0, 0].tolist() == [4, 5, 6, 7]
    assert x[0, 0, 0].tolist() == [0, 1, 2, 3]                  # the input is left alone


def test_grounding_ceiling_trains_and_scores_the_model_on_the_same_pairs(tmp_path):
    import grounding_ceiling
    world = toy.generate(tmp_path / "w", seed=0, **{**TINY, "mnre_dev": 10})
    out = grounding_ceiling.main(["--data", str(world), "--steps", "3", "--eval-every", "2", "--size", "32",
                                  "--json", str(tmp_path / "g.json")])
    assert set(out["cnn_auc"]) == {2, 3} and out["present"] + out["absent"] > 0
    assert json.loads((tmp_path / "g.json").read_text())["steps"] == 3


def test_matched_share_uses_each_box_once():
    import box_ceiling
    import schema as S
    gold = S.ImageEvent("Conflict:Attack", (S.Argument("Attacker", S.Box(0, 0, 10, 10)),
                                            S.Argument("Attacker", S.Box(1, 0, 11, 10)),
                                            S.Argument("Target", S.Box(20, 20, 30, 30))))
    pred = S.ImageEvent("Conflict:Attack", (S.Argument("Attacker", S.Box(0, 0, 10, 10)),   # IoU 1, then 0.82
                                            S.Argument("Target", S.Box(20, 20, 30, 36))))  # IoU 100 / 160
    share = box_ceiling.matched_share([([gold], [pred])])
    assert share["gold"] == 3 and share["matched"] == pytest.approx(200 / 3)
    assert share["counts"] == {"matched": 2, "not written": 1}   # the second Attacker finds its box used


def test_box_net_writes_ordered_corners_in_the_frame():
    import box_ceiling
    import torch
    net = box_ceiling.BoxNet(n_keys=3, size=32).eval()
    b = net(torch.randn(2, 3, 32, 32), torch.tensor([0, 2]))
    assert b.shape == (2, 4) and (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()


def test_box_ceiling_trains_and_scores_the_gold_arguments(tmp_path):
    import box_ceiling
    world = toy.generate(tmp_path / "w", seed=0, **TINY)
    out = box_ceiling.main(["--data", str(world), "--steps", "3", "--eval-every", "2", "--size", "32",
                            "--json", str(tmp_path / "b.json")])
    assert 0 <= out["cnn"]["matched"] <= 100 and out["cnn"]["gold"] > 0 and set(out["curve"]) == {2, 3}
    assert json.loads((tmp_path / "b.json").read_text())["steps"] == 3


def test_plural_bound_known_answer():
    """One role with one box, one with three: gold 4, one-box roles 1, several-box roles 1, so one
    box per role is 2 predictions; group boxes match 1 (F1 200 / 6), one figure each matches 2."""
    import vision_errors
    import schema as S
    box = S.Box(0, 0, 10, 10)
    event = S.ImageEvent("Conflict:Demonstrate", (S.Argument("Police", box),
                                                  *(S.Argument("Entity", box) for _ in range(3))))
    image = S.Image("i", (64, 64), (event,))
    out = vision_errors.plural_bound([image])
    assert out == {"gold": 4, "in_several_box_roles": 3, "several_box_roles": 1,
                   "f1_group_boxes": 33.3, "f1_one_figure_each": 66.7}
