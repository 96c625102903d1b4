"""End to end on a tiny toy world: stage 1 -> stage 2 -> evaluate, through the public entry points.

These check the pipeline's files and the scorer's output, not a quality number (a few steps learn nothing).
"""
import json
import random

import pytest
from safetensors.torch import load_file

import evaluate
import rmpl
import schema as S
import toy
import train

TINY = dict(ace_train=24, ace_dev=8, ace_test=8, swig_train=16, swig_dev=6, swig_test=6, mnre_train=12, mnre_dev=4,
            mnre_test=4, m2e2_dev=2, m2e2_test=2)
FAST = ["--max-steps", "3", "--batch-size", "4", "--eval-every", "3", "--eval-batches", "1", "--dev-docs", "1",
        "--log-every", "1", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return toy.generate(tmp_path_factory.mktemp("toy"), seed=0, **TINY)


def test_stage1_stage2_evaluate(world, tmp_path, capsys):
    out = tmp_path / "runs"
    train.main(["--stage", "1", "--data", str(world), "--out", str(out), *FAST])
    train.main(["--stage", "2", "--data", str(world), "--out", str(out), *FAST])
    lora = tmp_path / "lora"  # stage 2 with LoRA adapters on the stage-1 base
    train.main(["--stage", "2", "--data", str(world), "--out", str(lora), "--init", str(out / "stage1"),
                "--lora-rank", "4", *FAST])
    for run, files in [(out / "stage1", ["model.safetensors"]), (out / "stage2", ["model.safetensors"]),
                       (lora / "stage2", ["model.safetensors", "adapter.safetensors"])]:
        for name in files + ["tokenizer.model", "rmpl.json", "train_state.pt", "log.jsonl"]:
            assert (run / name).is_file(), f"{run} has no {name}"
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log if "loss" in r] == [1, 2, 3] and "dev_loss" in log[-1]
        assert json.loads((run / "rmpl.json").read_text())["step"] == 3
    capsys.readouterr()
    evaluate.main(["--checkpoint", str(lora / "stage2"), "--data", str(world), "--split", "test", "--json"])
    assert set(evaluate.CELLS) <= set(json.loads(capsys.readouterr().out))  # base + adapter load and extract
    evaluate.main(["--checkpoint", str(out / "stage2"), "--data", str(world), "--split", "test", "--json"])
    result = json.loads(capsys.readouterr().out)  # exactly one JSON object
    assert set(evaluate.CELLS) <= set(result)
    gold = evaluate.read_m2e2(world / "m2e2" / "test")
    assert result["text_mention"]["gold"] == sum(len(s.events) for s in gold.sentences.values())
    pred = out / "stage2" / "predictions_test.jsonl"
    ids = {json.loads(line).get("sentence_id") for line in pred.read_text().splitlines()}
    assert set(gold.sentences) <= ids  # one line per sentence at least
    evaluate.main(["--gold", str(world / "m2e2" / "test"), "--pred", str(pred), "--json"])
    assert json.loads(capsys.readouterr().out) == result  # re-scoring the written file gives the same numbers


def test_same_seed_same_weights(world, tmp_path):
    runs = []
    for name in ("a", "b"):
        train.main(["--stage", "1", "--data", str(world), "--out", str(tmp_path / name), *FAST, "--dev-docs", "0"])
        runs.append(load_file(tmp_path / name / "stage1" / "model.safetensors"))
    assert runs[0].keys() == runs[1].keys()
    assert all((runs[0][k] == runs[1][k]).all() for k in runs[0])


def test_missing_checkpoint_is_a_clear_error(world, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(tmp_path / "nothing"), "--data", str(world)])
    assert e.value.code == 2 and "no trained model here" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [0, 1])
def test_prediction_files_score_as_in_memory(tmp_path, monkeypatch, capsys, seed):
    """What evaluate.py writes, re-read from disk, scores exactly as it scored in memory. The decoder is
    replaced by one that babbles plausible records (random types, roles of any type, words of the prompt,
    boxes anywhere, the letterbox padding included), so the file meets what an untrained model writes."""
    world = toy.generate(tmp_path / "toy", seed=seed, **TINY)
    out = tmp_path / "runs"
    train.main(["--stage", "1", "--data", str(world), "--out", str(out), *FAST, "--max-steps", "1"])
    rng = random.Random(seed)

    def babble(self, examples):
        outputs = []
        for e in examples:
            words = [w for w in e.prompt if w not in S.SPECIAL_TOKENS]
            event_type = rng.choice(list(S.EVENT_TYPES))
            tokens = [S.TYPE_TOKENS[event_type]] + ([rng.choice(words)] if words else [])
            for _ in range(rng.randint(0, 3)):
                tokens.append(S.ROLE_TOKENS[rng.choice(S.EVENT_TYPES[event_type][not words])])
                # half of the boxes in the last 2 bins: the letterbox padding of a non-square image
                tokens += [rng.choice(words)] if words else rng.choices(S.LOC_TOKENS[rng.choice((0, 62)):], k=4)
            outputs.append(tokens)
        return outputs

    monkeypatch.setattr(rmpl.RMPL, "run", babble)
    pred_file = tmp_path / "pred.jsonl"
    capsys.readouterr()
    evaluate.main(["--checkpoint", str(out / "stage1"), "--data", str(world), "--split", "test", "--json",
                   "--pred-out", str(pred_file)])
    in_memory = json.loads(capsys.readouterr().out)
    evaluate.main(["--gold", str(world / "m2e2" / "test"), "--pred", str(pred_file), "--json"])
    from_file = json.loads(capsys.readouterr().out)
    assert from_file == in_memory
    assert in_memory["image_argument"]["pred"] > 0 and in_memory["text_argument"]["pred"] > 0
