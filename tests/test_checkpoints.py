"""Checkpoints: exact resume, crash-safe writes, loading never runs code, non-finite losses stop.

Exact resume is checked the strict way: a run interrupted after its step-k checkpoint and continued with
--resume must end with the same bytes in every tensor as a run that was never interrupted (CPU, one seed).
"""
import itertools
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


import model as M
from lora import remove_lora
from run import RunDir, weights_hash
import tasks
import train

FAST = ["--max-steps", "6", "--eval-every", "3", "--batch-size", "4", "--eval-batches", "1", "--dev-docs", "0",
        "--warmup-steps", "1", "--log-every", "1", "--model-size", "tiny"]
ROOT = Path(__file__).resolve().parent.parent



@pytest.fixture(scope="module")
def base(world, tmp_path_factory):
    """A 3-step stage-1 model for the stage-2 runs to start from."""
    out = tmp_path_factory.mktemp("base")
    train.main(["--stage", "1", "--data", str(world), "--out", str(out), *FAST, "--max-steps", "3"])
    return out / "stage1"


def train_until(monkeypatch, argv, k):
    """Run train.main(argv) and stop it as if killed right after it wrote its step-k checkpoint."""
    save = RunDir.save_checkpoint

    def save_then_stop(run, net, opt, sampler, info):
        save(run, net, opt, sampler, info)
        if info["step"] == k:
            raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(RunDir, "save_checkpoint", save_then_stop)
        with pytest.raises(SystemExit) as stop:  # train.py's one line for a Ctrl-C
            train.main(argv)
        assert stop.value.code == 130


def losses(run):
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r}


@pytest.mark.parametrize("stage", ["1", "2-full", "2-lora"])
def test_resume_is_bit_exact(world, base, tmp_path, monkeypatch, stage):
    args = {"1": ["--stage", "1"], "2-full": ["--stage", "2", "--init", str(base)],
            "2-lora": ["--stage", "2", "--init", str(base), "--lora-rank", "4"]}[stage]
    args += ["--data", str(world), *FAST]
    train.main([*args, "--out", str(tmp_path / "straight")])
    train_until(monkeypatch, [*args, "--out", str(tmp_path / "cut")], 3)
    n = int(stage[0])
    cut, straight = tmp_path / "cut" / f"stage{n}", tmp_path / "straight" / f"stage{n}"
    assert json.loads((cut / "rmpl.json").read_text())["step"] == 3
    train.main([*args, "--out", str(tmp_path / "cut"), "--resume"])

    files = ["model.safetensors"] + ["adapter.safetensors"] * (stage == "2-lora")
    for name in files:
        a, b = load_file(straight / name), load_file(cut / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name}: resumed weights differ"
    if stage == "2-lora":  # LoRA dropout draws from the torch RNG: without its restore the adapters would differ
        assert any(float(t.abs().sum()) > 0 for k, t in load_file(cut / "adapter.safetensors").items() if "lora_B" in k)
    sa, sb = (torch.load(r / "train_state.pt", weights_only=True) for r in (straight, cut))
    assert sa["step"] == sb["step"] == 6 and sa["sampler"] == sb["sampler"]
    assert losses(cut) == losses(straight)  # the resumed log carries the same losses at steps 4-6


def test_resume_without_checkpoint_is_a_clear_error(world, tmp_path):
    with pytest.raises(SystemExit, match="no train_state.pt in .*drop --resume"):
        train.main(["--data", str(world), "--out", str(tmp_path), *FAST, "--resume"])


class Killed(BaseException):
    """A kill: no ``except Exception`` stops it, and nothing after it runs."""


def test_a_kill_anywhere_in_a_checkpoint_write_resumes_exactly(world, tmp_path, monkeypatch):
    """Kill the step-6 checkpoint write at each of its file-system changes in turn (every rename and deletion):
    --resume must go on from step 3 (killed before the commit) or from step 6 (after it) and end with the
    weights of a run that was never interrupted."""
    args = ["--data", str(world), *FAST]
    train.main([*args, "--out", str(tmp_path / "straight")])
    want = load_file(tmp_path / "straight" / "stage1" / "model.safetensors")
    train_until(monkeypatch, [*args, "--out", str(tmp_path / "at3")], 3)
    save, resumed_from = RunDir.save_checkpoint, []
    for cut in itertools.count(1):
        changes = 0  # file-system changes made by the step-6 save so far
        armed = False

        def counted(fn):
            def change(*a, **kw):
                nonlocal changes
                changes += armed
                if armed and changes == cut:
                    raise Killed
                return fn(*a, **kw)
            return change

        def save_6(*a):
            nonlocal armed
            armed = a[-1]["step"] == 6
            save(*a)
            armed = False
        out = tmp_path / f"cut{cut}"
        shutil.copytree(tmp_path / "at3", out)
        with monkeypatch.context() as m:
            m.setattr(RunDir, "save_checkpoint", save_6)
            for obj, name in [(os, "replace"), (Path, "unlink"), (Path, "rmdir")]:
                m.setattr(obj, name, counted(getattr(obj, name)))
            try:
                train.main([*args, "--out", str(out), "--resume"])
                break  # the save made fewer than `cut` changes: every cut point has been tried
            except Killed:
                pass
        train.main([*args, "--out", str(out), "--resume"])
        run = out / "stage1"
        resumed_from.append(next(r["step"] for r in map(json.loads, reversed((run / "log.jsonl").read_text().splitlines()))
                                 if r.get("resumed")))
        got = load_file(run / "model.safetensors")
        assert all(torch.equal(want[k], got[k]) for k in want), f"cut {cut}: resumed weights differ"
        assert not (run / RunDir.PENDING).exists()
    print("resumed from, per cut point:", resumed_from)
    assert set(resumed_from) == {3, 6} and len(resumed_from) >= 7, resumed_from  # both sides of the commit seen


def test_checkpoint_files_mixed_by_hand_are_refused(world, tmp_path, monkeypatch):
    """New weights beside an old train state (copied in by hand; a kill cannot do it): refuse, name it."""
    args = ["--data", str(world), "--out", str(tmp_path), *FAST]
    train_until(monkeypatch, args, 3)
    run = tmp_path / "stage1"
    old_state = (run / "train_state.pt").read_bytes()
    train_until(monkeypatch, [*args, "--resume"], 6)
    (run / "train_state.pt").write_bytes(old_state)  # as if killed before the last write of step 6
    with pytest.raises(SystemExit, match=r"train_state.pt \(step 3\) does not belong with model.safetensors.*"
                                         r"different checkpoints"):
        train.main([*args, "--resume"])


class Payload:
    """Unpickling this would create a file: proof that code ran."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_train_state_is_refused(world, tmp_path, monkeypatch):
    args = ["--data", str(world), "--out", str(tmp_path), *FAST]
    train_until(monkeypatch, args, 3)
    marker = tmp_path / "pwned"
    state = torch.load(tmp_path / "stage1" / "train_state.pt", weights_only=True)
    state["sampler"] = Payload(marker)
    torch.save(state, tmp_path / "stage1" / "train_state.pt")
    with pytest.raises(SystemExit, match="refused: it holds pickled objects other than tensors"):
        train.main([*args, "--resume"])
    assert not marker.exists(), "the payload ran"
    pickle.loads(pickle.dumps(Payload(marker)))  # the test's own check: plain pickle does run it
    assert marker.exists()


def test_nan_loss_stops_and_keeps_the_last_checkpoint(world, tmp_path, monkeypatch):
    calls, real = [], tasks.multitask_loss

    def nan_at_step_3(*a, **kw):
        calls.append(1)
        loss, parts = real(*a, **kw)
        return (loss * float("nan") if len(calls) == 3 else loss), parts
    monkeypatch.setattr(train, "multitask_loss", nan_at_step_3)
    run = tmp_path / "stage1"
    with pytest.raises(SystemExit, match=rf"step 3: non-finite loss nan .*\(the checkpoint of step 2 in {run} is "
                                         rf"intact: --resume continues from it\)"):
        train.main(["--data", str(world), "--out", str(tmp_path), *FAST, "--eval-every", "1"])
    assert json.loads((run / "rmpl.json").read_text())["step"] == 2
    assert torch.load(run / "train_state.pt", weights_only=True)["step"] == 2
    assert all(torch.isfinite(t).all() for t in load_file(run / "model.safetensors").values())


def test_infinite_lr_never_writes_non_finite_weights(world, tmp_path):
    """lr = inf: the loss of step 1 is finite, its update is not; the step-1 checkpoint must not be written."""
    with pytest.raises(SystemExit, match="step 1: non-finite weights in .*checkpoint not written; .* has no "
                                         "checkpoint yet"):
        train.main(["--data", str(world), "--out", str(tmp_path), *FAST, "--eval-every", "1", "--lr", "inf"])
    assert not (tmp_path / "stage1" / "model.safetensors").exists()
    assert not (tmp_path / "stage1" / "train_state.pt").exists()


# A writer that saves checkpoints in a loop; checkpoint i has every weight equal to i, so a torn or mixed
# file shows up as more than one value.
WRITER = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    import model as M, tensors
    from run import RunDir
    torch.set_num_threads(1)  # the test runs beside it; two threads each on two cores only thrash
    run = RunDir({run!r})
    net = M.Seq2Seq(M.ModelConfig(vocab_size=500, **M.MODEL_SIZES["small"]))
    opt = torch.optim.AdamW(net.parameters())
    sampler = tensors.TaskSampler({{"text_event": list(range(10))}}, {{"text_event": 1.0}}, 2)
    for i in range({start}, 10**6):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(i)
        run.save_checkpoint(net, opt, sampler, dict(stage=1, tasks=["text_event"], step=i,
                                                     config=dict(lora_rank=0)))
        print(i, flush=True)
""")


def test_sigkill_while_saving_leaves_a_whole_checkpoint(tmp_path):
    """Real kills at random moments: once settled (finish_checkpoint, as --resume does), the run holds one whole
    checkpoint, the last one the writer finished or the one it was writing, and it loads for resuming."""
    rng, run, outcomes = random.Random(0), tmp_path / "stage1", []
    run.mkdir()
    for attempt in range(4):
        start = 1000 * attempt  # each writer continues over the previous one's files
        proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), run=str(run), start=start)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == str(start)  # imports done, one checkpoint written
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = int(([str(start)] + proc.stdout.read().split())[-1])  # the last checkpoint save_checkpoint finished
        pending = run / RunDir.PENDING
        outcomes.append(f"+{done - start} " + ("nothing pending" if not pending.exists() else
                                               "committed" if (pending / "COMMITTED").exists() else "uncommitted"))
        RunDir(run).finish_checkpoint()
        weights = {k: t for k, t in load_file(run / "model.safetensors").items()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked", "targets_seen", "known"))}
        values = {float(v) for t in weights.values() for v in t.unique()}
        assert len(values) == 1, f"attempt {attempt}: weights of several checkpoints mixed: {sorted(values)[:5]}"
        weights_step = int(values.pop())
        assert weights_step in (done, done + 1)
        assert json.loads((run / "rmpl.json").read_text())["step"] == weights_step
        opt = torch.optim.AdamW(M.Seq2Seq(M.ModelConfig(vocab_size=500, **M.MODEL_SIZES["small"])).parameters())
        sampler = train.tensors.TaskSampler({"text_event": list(range(10))}, {"text_event": 1.0}, 2)
        assert RunDir(run).load_train_state(opt, sampler) == weights_step
        assert not (run / RunDir.PENDING).exists() and not list(run.glob(".tmp-*"))
    print("SIGKILL outcomes (checkpoints finished, state of the write that was cut):", outcomes)


@pytest.mark.parametrize("stage", ["1", "2-lora"])
def test_keep_best_keeps_the_weights_of_the_best_evaluation(world, base, tmp_path, monkeypatch, stage):
    """--keep-best: scripted dev scores 10, 30, 20 (then, resumed, 25): best/ holds step 2's weights throughout (a
    resumed run compares with the best on disk, not with nothing), and opens as a run of its own."""
    args = {"1": ["--stage", "1"], "2-lora": ["--stage", "2", "--init", str(base), "--lora-rank", "4"]}[stage]
    args += ["--data", str(world), *FAST, "--max-steps", "4", "--eval-every", "1", "--dev-docs", "1",
             "--keep-best", "text_mention", "--out", str(tmp_path)]
    scores = iter([10.0, 30.0, 20.0, 25.0])
    monkeypatch.setattr(train.rmpl, "quick_score", lambda *a: {"text_mention": next(scores), "image_mention": 99.0})
    hashes, save = {}, RunDir.save_checkpoint

    def save_and_hash(run, net, opt, sampler, info):
        hashes[info["step"]] = weights_hash(merged_copy(net))
        save(run, net, opt, sampler, info)
    monkeypatch.setattr(RunDir, "save_checkpoint", save_and_hash)
    train_until(monkeypatch, args, 3)
    train.main([*args, "--resume"])
    best = RunDir(tmp_path / f"stage{stage[0]}" / "best")
    assert best.info()["step"] == 2 and best.info()["dev_f1"]["text_mention"] == 30.0
    assert sorted(hashes) == [1, 2, 3, 4] and len(set(hashes.values())) == 4
    assert weights_hash(best.open()[0]) == hashes[2]
    assert (best / "adapter.safetensors").exists() == (stage == "2-lora")
    monkeypatch.undo()
    train.main(["--stage", "2", "--init", str(best), "--data", str(world), *FAST, "--max-steps", "1",
                "--out", str(tmp_path / "next")])


def merged_copy(net):
    """The network as a plain model (a LoRA update baked in), leaving ``net`` as it is."""
    import copy
    return remove_lora(copy.deepcopy(net), merge=True)
