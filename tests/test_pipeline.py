"""End to end on a tiny toy world: stage 1 -> stage 2 -> evaluate, through the public entry points.

These check the pipeline's files and the scorer's output, not a quality number (a few steps learn nothing).
"""
import json
import random

import pytest
import torch
from safetensors.torch import load_file

import evaluate
import lora
import rmpl
from run import load_adapter, load_model
import schema as S
import tasks
import tensors
import toy
import train
from data import read_m2e2
from tests.conftest import TINY

FAST = ["--max-steps", "3", "--batch-size", "4", "--eval-every", "3", "--eval-batches", "1", "--dev-docs", "1",
        "--log-every", "1", "--warmup-steps", "1"]



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
    rmpl.main(["--checkpoint", str(out / "stage2"), "--data", str(world), "--split", "test", "--json"])
    result = json.loads(capsys.readouterr().out)  # exactly one JSON object
    gold = read_m2e2(world / "m2e2" / "test")
    check_cells(result, gold)
    pred = rmpl.default_pred_out(out / "stage2", world / "m2e2" / "test")
    assert pred.name == f"predictions_{world.name}_m2e2_test.jsonl"
    ids = {json.loads(line).get("sentence_id") for line in pred.read_text().splitlines()}
    assert set(gold.sentences) <= ids  # one line per sentence at least
    evaluate.main(["--gold", str(world / "m2e2" / "test"), "--pred", str(pred), "--json"])
    assert json.loads(capsys.readouterr().out) == result  # re-scoring the written file gives the same numbers


def check_cells(result, gold):
    """Every cell consistent with its own counts (p, r, f1 recomputed), the gold counts those of the gold."""
    for name in evaluate.CELLS:
        c = result[name]
        assert 0 <= c["match"] <= min(c["pred"], c["gold"]), (name, c)
        p, r = (c["match"] / c["pred"] if c["pred"] else 0.0), (c["match"] / c["gold"] if c["gold"] else 0.0)
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        assert (c["p"], c["r"], c["f1"]) == (round(100 * p, 2), round(100 * r, 2), round(100 * f1, 2)), (name, c)
    assert result["text_mention"]["gold"] == sum(len(s.events) for s in gold.sentences.values())
    image_events = {(i.id, e.event_type) for i in gold.images.values() for e in i.events}
    assert result["image_mention"]["gold"] == len(image_events)
    links = {(x.sentence_id, x.image_id, x.event_type) for x in gold.links}
    assert result["multimedia_mention"]["gold"] == len(links)


def test_lora_evaluation_scores_what_the_adapter_computes(world, tmp_path, capsys):
    """Stage 2 with LoRA (a large lr, so that 3 steps move the adapter far from zero), then evaluate.py.

    The network evaluate.py runs (base + adapter, merged for inference) must compute what the unmerged base +
    adapter computes, and not what the base alone does; its predictions file must be the unmerged extractor's,
    and its numbers consistent with their counts. A LoRA evaluation that drops the adapter, merges it wrongly
    or scores something else fails here."""
    base = tmp_path / "runs"
    train.main(["--stage", "1", "--data", str(world), "--out", str(base), *FAST, "--dev-docs", "0"])
    train.main(["--stage", "2", "--data", str(world), "--out", str(tmp_path / "lora"),
                "--init", str(base / "stage1"), "--lora-rank", "4", *FAST, "--dev-docs", "0", "--lr", "0.05"])
    run = tmp_path / "lora" / "stage2"
    capsys.readouterr()
    rmpl.main(["--checkpoint", str(run), "--data", str(world), "--split", "test", "--json"])
    result = json.loads(capsys.readouterr().out)
    gold = read_m2e2(world / "m2e2" / "test", images=True)
    check_cells(result, gold)

    tok, run_tasks = tensors.Tokenizer.load(run / "tokenizer.model"), json.loads((run / "rmpl.json").read_text())["tasks"]
    evaluated = rmpl.RMPL.load(run)  # what rmpl.py runs
    unmerged = load_adapter(load_model(run / "model.safetensors"), run / "adapter.safetensors").eval()
    assert lora.lora_layers(unmerged) and not any(layer.merged for layer in lora.lora_layers(unmerged).values())
    plain = load_model(run / "model.safetensors").eval()
    examples = [e for s in gold.sentences.values() for e in tasks.text_examples("text_mention", s)]
    examples += [e for i in gold.images.values() for e in tasks.image_examples("image_mention", i)]
    cfg = plain.cfg
    batch = tensors.collate([tensors.encode_example(e, tok, cfg.image_size, cfg.max_text_len, cfg.max_target_len)
                          for e in examples], tok.pad_id)
    with torch.no_grad():
        logits = unmerged(batch)[0]
        torch.testing.assert_close(evaluated.net(batch)[0], logits, atol=1e-4, rtol=0)
        assert (plain(batch)[0] - logits).abs().max() > 0.1  # the adapter matters

    extractor = rmpl.RMPL(unmerged, tok, run_tasks)
    assert evaluated.run(examples) == extractor.run(examples)  # the same greedy tokens
    pred = extractor.predict(list(gold.sentences.values()), list(gold.images.values()))
    written = [json.loads(line) for line in rmpl.default_pred_out(run, world / "m2e2" / "test").read_text().splitlines()]
    assert written == json.loads(json.dumps(rmpl.prediction_lines(pred)))
    assert evaluate.score(gold, pred) == result


def test_same_seed_same_weights(world, tmp_path):
    runs = []
    for name in ("a", "b"):
        train.main(["--stage", "1", "--data", str(world), "--out", str(tmp_path / name), *FAST, "--dev-docs", "0"])
        runs.append(load_file(tmp_path / name / "stage1" / "model.safetensors"))
    assert runs[0].keys() == runs[1].keys()
    assert all((runs[0][k] == runs[1][k]).all() for k in runs[0])


def test_missing_checkpoint_is_a_clear_error(world, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        rmpl.main(["--checkpoint", str(tmp_path / "nothing"), "--data", str(world)])
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

    def babble(self, examples, eos_bias=None):
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
    rmpl.main(["--checkpoint", str(out / "stage1"), "--data", str(world), "--split", "test", "--json",
                   "--pred-out", str(pred_file)])
    in_memory = json.loads(capsys.readouterr().out)
    evaluate.main(["--gold", str(world / "m2e2" / "test"), "--pred", str(pred_file), "--json"])
    from_file = json.loads(capsys.readouterr().out)
    assert from_file == in_memory
    assert in_memory["image_argument"]["pred"] > 0 and in_memory["text_argument"]["pred"] > 0
