"""A new user's path through the commands: what each mistake says, through main([...])."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import evaluate
import rmpl
import schema as S
import toy
import train
from run import RunDir
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max-steps", "2", "--batch-size", "4", "--eval-every", "2", "--eval-batches", "1", "--dev-docs", "0"]



def exit_message(argv) -> str:
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    return str(stop.value.code)


@pytest.mark.parametrize("flag, value", [("--max-steps", "-5"), ("--batch-size", "0"), ("--lr", "-1"),
                                         ("--eval-every", "0"), ("--model-size", "huge"), ("--stage", "3"),
                                         ("--keep-best", "mention"), ("--keep-best", "text_mention --dev-docs 0")])
def test_bad_values_are_refused_before_anything_runs(flag, value, tmp_path, capsys):
    assert exit_message([flag, *value.split(), "--out", str(tmp_path)]) == "2"  # argparse's usage error
    assert flag.lstrip("-").split("-")[0] in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv", [["--min-lr", "0.01"],                       # above the default --lr 1e-3
                                  ["--lr", "5e-5"],                          # under the default --min-lr 1e-4
                                  ["--stage", "2", "--min-lr", "6e-4"]])     # above stage 2's lr 5e-4
def test_a_floor_above_the_peak_lr_is_refused(argv, tmp_path, capsys):
    assert exit_message([*argv, "--out", str(tmp_path)]) == "2"
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--min-lr" in err and "is above --lr" in err
    assert not any(tmp_path.iterdir())


def test_every_flag_has_help(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "stage 1: 1500; stage 2: 450" in text  # --max-steps' defaults per stage
    for name in ("--init", "--tasks", "--dev-docs", "--eval-batches", "--lora-rank"):
        assert text.split(name, 2)[2].split("--", 1)[0].strip(), f"{name} has no help"


@pytest.mark.parametrize("flag, default", [
    ("--warmup-steps", "stage 1: 100; stage 2: 50"),   # only stage 2 has a preset: stage 1's is the field's
    ("--max-steps", "stage 1: 1500; stage 2: 450"),
    ("--lr", "stage 1: 0.001; stage 2: 0.0005"),
    ("--min-lr", "0.0001"),                            # the same for every stage
])
def test_the_help_gives_each_stages_default(flag, default, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert f"(default {default})" in text.split(f" {flag} {flag[2:].replace('-', '_').upper()} ", 1)[1]


def logged(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("clip", ["1e-3", "0"])
def test_grad_clip_scales_the_update_and_0_turns_it_off(clip, world, tmp_path):
    stepped = []  # the norm of the gradients each optimizer step applies: after clipping

    def record(opt, args, kwargs):
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        stepped.append(torch.nn.utils.get_total_norm(grads).item())
    hook = register_optimizer_step_pre_hook(record)
    try:
        train.main(["--data", str(world), "--out", str(tmp_path), *FAST, "--log-every", "1",
                    "--model-size", "tiny", "--grad-clip", clip])
    finally:
        hook.remove()
    norms = [r["grad_norm"] for r in logged(tmp_path / "stage1") if "grad_norm" in r]  # before clipping
    assert len(stepped) == len(norms) == 2 and min(norms) > 0.1
    if clip == "0":  # no clipping: the whole gradient (--grad-clip 0 once scaled every gradient by 0)
        assert stepped == pytest.approx(norms, abs=1e-3)  # logged to 3 decimals
    else:
        assert max(stepped) == pytest.approx(1e-3, rel=1e-3)


def test_eval_batches_0_turns_the_dev_loss_off(world, tmp_path, capsys):
    train.main(["--data", str(world), "--out", str(tmp_path), *FAST, "--model-size", "tiny",
                "--eval-batches", "0"])
    evals = [r for r in logged(tmp_path / "stage1") if "dev_f1" in r]
    assert len(evals) == 1 and "dev_loss" not in evals[0]  # not a dev loss of 0.000
    assert "eval     2 | dev loss off | dev F1" in capsys.readouterr().out


def test_a_batch_larger_than_the_training_data_is_refused(world, tmp_path):
    # the tiny world's stage 1: 24 text_event, 16 image_event and 6 relation training examples
    message = exit_message(["--data", str(world), "--out", str(tmp_path), *FAST, "--batch-size", "100000"])
    assert message.startswith("train.py: --batch-size 100000 is more than the 46 training examples")
    assert "(text_event 24, image_event 16, relation 6)" in message and message.endswith("at most 46")
    message = exit_message(["--data", str(world), "--out", str(tmp_path), *FAST, "--tasks", "text_event",
                            "--batch-size", "25"])
    assert "more than the 24 training examples" in message and message.endswith("at most 24")
    train.main(["--data", str(world), "--out", str(tmp_path / "full"), *FAST, "--model-size", "tiny",
                "--tasks", "text_event", "--batch-size", "24"])  # every example once: allowed


def without(world: Path, source: str, root: Path) -> Path:
    """The world without one source directory (the others linked, not copied)."""
    root.mkdir()
    for sub in world.iterdir():
        if sub.name != source:
            (root / sub.name).symlink_to(sub)
    return root


def test_a_missing_source_is_one_warning_naming_its_tasks(world, tmp_path, capsys):
    data = without(world, "swig", tmp_path / "data")
    train.main(["--data", str(data), "--out", str(tmp_path / "runs"), *FAST, "--model-size", "tiny"])
    out = capsys.readouterr().out
    assert f"warning: {data} has no swig/ directory: stage 1 trains without image_event\n" in out
    assert "stage 1: tasks text_event (24), relation (6);" in out


def test_a_resume_with_another_seed_or_other_data_is_one_line(world, tmp_path):
    args = ["--out", str(tmp_path / "runs"), *FAST, "--model-size", "tiny"]
    train.main(["--data", str(world), *args])
    message = exit_message(["--resume", "--seed", "1", "--max-steps", "3", "--out", str(tmp_path / "runs")])
    assert message.startswith("train.py: --resume: seed 0 vs 1 (the run's vs now)")
    assert "a resume needs the run's own data and seed" in message
    data = without(world, "swig", tmp_path / "data")
    message = exit_message(["--resume", "--data", str(data), "--max-steps", "3", "--out", str(tmp_path / "runs")])
    assert message.startswith("train.py: --resume: the task sizes differ (text_event 24, image_event 16, "
                              "relation 6 vs text_event 24, relation 6): the data changed (the run's vs now)")


@pytest.mark.parametrize("at, said", [
    (3, "interrupted at step 4; the checkpoint of step 2 in {run} is intact: --resume continues from it"),
    (0, "interrupted at step 1; {run} has no checkpoint yet: the same command without --resume starts again")])
def test_ctrl_c_is_one_line_and_exit_status_130(at, said, world, tmp_path, monkeypatch, capsys):
    real = train.Trainer.step

    def step(trainer, k):  # Ctrl-C in the k-th step (0-based)
        if k == at:
            raise KeyboardInterrupt
        return real(trainer, k)
    monkeypatch.setattr(train.Trainer, "step", step)
    with pytest.raises(SystemExit) as stop:
        train.main(["--data", str(world), "--out", str(tmp_path), *FAST, "--model-size", "tiny", "--max-steps", "4"])
    assert stop.value.code == 130
    assert capsys.readouterr().err == f"train.py: {said.format(run=tmp_path / 'stage1')}\n"


def test_the_default_world_is_the_repositorys_from_any_directory(tmp_path, monkeypatch, capsys):
    """Not ./data/toy: a second 17 MB world in every directory train.py was run from."""
    monkeypatch.chdir(tmp_path)
    default = Path(train.__file__).resolve().parent / "data" / "toy"
    assert train.parse_args([]).data == toy.DEFAULT_DATA == str(default)
    asked = []

    def stop(root, *args, **kwargs):  # the generator writes 17 MB, the reader reads them: not here
        asked.append(Path(root))
        raise InterruptedError
    monkeypatch.setattr(toy.world, "generate", stop)
    monkeypatch.setattr(train.data, "read_sources", stop)
    with pytest.raises(InterruptedError):
        train.main(["--out", "runs", *FAST])
    out = capsys.readouterr().out
    if asked[0] == default:  # the repository has its world already
        assert f"reading {default} ..." in out
    else:
        assert asked[0] == default.with_name("toy.partial")  # then renamed to data/toy
        assert out.startswith(f"generating the toy world in {default} (first use")
    assert exit_message(["--data", "data/toy", "--out", "runs", *FAST]) == "2"  # ./data/toy: not the default
    assert f"(only the default, {default}, is generated" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_the_scorers_default_world_is_train_pys(tmp_path, monkeypatch):
    """rmpl.py and evaluate.py read the world train.py trained on, from any directory (their
    default was ./data/toy: from elsewhere they looked for gold that is not there)."""
    monkeypatch.chdir(tmp_path)
    args = evaluate.command_line("scoring").parse_args([])
    assert args.data == evaluate.TOY_DATA == train.parse_args([]).data == toy.DEFAULT_DATA
    assert evaluate.gold_dir(args) == Path(toy.DEFAULT_DATA) / "m2e2" / "test"


def test_an_existing_run_is_not_overwritten(world, tmp_path):
    args = ["--data", str(world), "--out", str(tmp_path), *FAST]
    train.main(args)
    before = (tmp_path / "stage1" / "model.safetensors").read_bytes()
    message = exit_message(args)
    assert "already holds a run" in message and "--resume" in message and "--out" in message
    assert (tmp_path / "stage1" / "model.safetensors").read_bytes() == before


def test_stage2_without_stage1_fails_before_reading_data(world, tmp_path, capsys):
    message = exit_message(["--stage", "2", "--data", str(world), "--out", str(tmp_path), *FAST])
    assert "no model.safetensors in" in message and "--init" in message
    assert "reading" not in capsys.readouterr().out and not (tmp_path / "stage2").exists()


def test_a_lora_run_resumes_with_its_own_settings(world, tmp_path, capsys):
    base = tmp_path / "base"
    train.main(["--data", str(world), "--out", str(base), *FAST])
    lora = ["--stage", "2", "--data", str(world), "--out", str(tmp_path / "lora"), "--init", str(base / "stage1")]
    train.main([*lora, "--lora-rank", "4", *FAST])
    capsys.readouterr()
    train.main(["--stage", "2", "--out", str(tmp_path / "lora"), "--resume", "--max-steps", "3"])  # no --lora-rank
    out = capsys.readouterr().out
    assert "resuming" in out and "at step 2 of 3" in out and "(from step 2)" in out
    assert json.loads((tmp_path / "lora" / "stage2" / "rmpl.json").read_text())["config"]["lora_rank"] == 4
    train.main(["--stage", "2", "--out", str(tmp_path / "lora"), "--resume", "--max-steps", "3"])
    assert "already done" in capsys.readouterr().out


def test_no_training_text_is_one_clear_line(world, tmp_path):
    empty = toy.generate(tmp_path / "w", seed=0, **TINY)
    (empty / "ace" / "train.json").write_text("[]")
    (empty / "mnre" / "train.txt").write_text("")
    message = exit_message(["--data", str(empty), "--out", str(tmp_path / "runs"), *FAST])
    assert message.startswith("train.py: ") and "no training sentences" in message


def test_missing_prediction_file_is_one_clear_line(world, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--gold", str(world / "m2e2" / "test"), "--pred", str(tmp_path / "nope.jsonl")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: --pred {tmp_path / 'nope.jsonl'}: no such file"


def test_predictions_of_two_data_roots_do_not_overwrite_each_other(tmp_path):
    ckpt = tmp_path / "runs" / "stage2"
    a = rmpl.default_pred_out(ckpt, tmp_path / "toy" / "m2e2" / "test")
    b = rmpl.default_pred_out(ckpt, tmp_path / "toy_s1" / "m2e2" / "test")
    assert a != b and a.parent == b.parent == ckpt


def test_grounded_links_on_a_model_without_the_relation_task_is_one_clear_line(world, tmp_path, capsys):
    out = tmp_path / "runs"
    train.main(["--stage", "1", "--data", str(world), "--out", str(out), "--tasks", "text_event,image_event", *FAST])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        rmpl.main(["--checkpoint", str(out / "stage1"), "--data", str(world), "--links", "grounded"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: links='grounded' needs a model whose grounding head was trained")


@pytest.mark.parametrize("command", [["evaluate.py", "--by-type"], ["-m", "toy.tools", "stats"]])
def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(world, tmp_path, command):
    """`python evaluate.py ... | head -1`: head closes the pipe; the command stops quietly."""
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"sentence_id": "none", "events": []}) + "\n")
    args = {"evaluate.py": ["--gold", str(world / "m2e2" / "test"), "--pred", str(pred)],
            "-m": [str(world)]}[command[0]]
    proc = subprocess.Popen([sys.executable, *command, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the command prints anything
    err = proc.stderr.read()
    assert proc.wait() == 1 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_an_unknown_link_rule_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        rmpl.main(["--checkpoint", str(tmp_path / "nothing"), "--links", "typ"])
    assert stop.value.code == 2 and "invalid choice: 'typ'" in capsys.readouterr().err


def test_a_stage_from_a_checkpoint_keeps_its_network_sizes(world, tmp_path, capsys):
    """Stage 2 (or --init) keeps the network it starts from: a size flag that differs is refused (it was
    ignored and recorded), one that agrees is fine, and rmpl.json records the sizes the network has (its trigger
    tagger's weight among them)."""
    args = ["--data", str(world), "--out", str(tmp_path), *FAST]
    train.main([*args, "--model-size", "tiny", "--vocab-size", "600", "--tag-weight", "3"])
    for flag, value in [("--model-size", "base"), ("--vocab-size", "900"), ("--max-text-len", "64"),
                        ("--tag-weight", "0")]:
        assert exit_message([*args, "--stage", "2", flag, value]) == "2"
        assert "the network this stage starts from has" in capsys.readouterr().err
    train.main([*args, "--stage", "2", "--model-size", "tiny"])
    config = json.loads((tmp_path / "stage2" / "rmpl.json").read_text())["config"]
    assert (config["model_size"], config["vocab_size"], config["max_text_len"], config["tag_weight"]) == (
        "tiny", 600, 128, 3.0)
    net, _ = RunDir(tmp_path / "stage2").open()
    assert net.cfg.tag_weight == 3.0 and net.tagger.out_features == 1 + len(S.EVENT_TYPES)
