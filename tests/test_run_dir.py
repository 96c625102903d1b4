"""A run directory through the commands: what a user who copies, stops, shares or fills one meets.

Each mistake ends train.py with one SystemExit message, or rmpl.py with one `error:` line and status 2;
each stopped run can be started again or resumed without deleting anything by hand.
"""
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import data
import model as M
import rmpl
import run as R
import tensors
import train
from run import RunDir

FAST = ["--max-steps", "2", "--batch-size", "4", "--eval-every", "2", "--eval-batches", "1", "--dev-docs", "0",
        "--model-size", "tiny", "--vocab-size", "600", "--log-every", "1"]



@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """A finished 2-step stage-1 run (vocabulary 600), for tests to copy and damage."""
    out = tmp_path_factory.mktemp("trained")
    train.main(["--data", str(world), "--out", str(out), *FAST])
    return out / "stage1"


def copy_of(run, tmp_path):
    """A copy of a run as OUT/stage1, for train.py --out OUT."""
    shutil.copytree(run, tmp_path / "out" / "stage1")
    return tmp_path / "out"


def exit_message(argv) -> str:
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    assert isinstance(stop.value.code, str) and stop.value.code.startswith("train.py: "), stop.value.code
    return stop.value.code


def rmpl_error(argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        rmpl.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def log_steps(run):
    return [json.loads(line)["step"] for line in (run / RunDir.LOG).read_text().splitlines()]


# ----------------------------------------------------------------------------- 1. a tokenizer of another run
@pytest.mark.parametrize("vocab", [560, 700])  # fewer pieces than the model's 600 (wrong words), more (IndexError)
def test_a_tokenizer_of_another_run_is_refused(world, trained, tmp_path, capsys, vocab):
    out = copy_of(trained, tmp_path)
    texts = [s.words for s in data.read_jmee(world / "ace" / "train.json")]
    tensors.Tokenizer.train(texts, vocab_size=vocab).save(out / "stage1" / RunDir.TOKENIZER)
    said = f"tokenizer.model has {vocab} pieces but {out / 'stage1' / 'model.safetensors'} was trained with a " \
           f"vocabulary of 600"
    assert said in rmpl_error(["--checkpoint", str(out / "stage1"), "--data", str(world)], capsys)
    assert said in exit_message(["--data", str(world), "--out", str(out), "--resume"])
    assert said in exit_message(["--stage", "2", "--data", str(world), "--out", str(out), *FAST])


# ----------------------------------------------------------------------------- 2. one train.py per run directory
HOLDER = "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); " \
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d' % os.getpid()); print('locked', flush=True); time.sleep(60)"


def test_one_train_py_per_run_directory_and_a_killed_one_leaves_no_lock(world, tmp_path):
    """Another process holds the run (as a train.py would, by flock on its lock file): refused, nothing written.
    Once it is killed (SIGKILL: nothing of it runs), the kernel has dropped its lock and the run starts."""
    run = tmp_path / "stage1"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run / RunDir.LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        message = exit_message(["--data", str(world), "--out", str(tmp_path), *FAST])
        assert message == f"train.py: {run}: another train.py is using this run directory (pid {holder.pid}); " \
                          f"wait for it to end, or pass --out DIR"
        assert sorted(p.name for p in run.iterdir()) == [RunDir.LOCK]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    train.main(["--data", str(world), "--out", str(tmp_path), *FAST])
    assert log_steps(run) == [1, 2, 2]
    with pytest.raises(SystemExit, match="another train.py is using"):  # a holder in this process: the same
        held = RunDir(run)
        assert held.lock()
        try:
            train.main(["--data", str(world), "--out", str(tmp_path), *FAST, "--resume", "--max-steps", "3"])
        finally:
            held.unlock()


# ----------------------------------------------------------------------------- 3. stopped before the first checkpoint
def ctrl_c_at_step_2(monkeypatch):
    step = train.Trainer.step

    def interrupted(trainer, k):
        if k == 1:
            raise KeyboardInterrupt
        return step(trainer, k)
    monkeypatch.setattr(train.Trainer, "step", interrupted)


def nan_at_step_1(monkeypatch):
    real = train.multitask_loss

    def nan(*a, **kw):
        loss, parts = real(*a, **kw)
        return loss * float("nan"), parts
    monkeypatch.setattr(train, "multitask_loss", nan)


def full_disk(monkeypatch):
    def write_atomic(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(R, "write_atomic", write_atomic)


STOPS = {  # how the run stops -> what train.py says
    "ctrl-c": (ctrl_c_at_step_2, "interrupted at step 2"),
    "nan": (nan_at_step_1, "step 1: non-finite loss nan"),
    "full disk": (full_disk, "the checkpoint of step 2 was not written (No space left on device)"),
}


def ctrl_c_message(args, capsys) -> str:
    """Ctrl-C ends train.py with status 130 and one line on stderr."""
    with pytest.raises(SystemExit) as stop:
        train.main(args)
    assert stop.value.code == 130
    return capsys.readouterr().err


@pytest.mark.parametrize("stop", STOPS)
def test_a_run_stopped_before_its_first_checkpoint_starts_again(world, tmp_path, capsys, monkeypatch, stop):
    args = ["--data", str(world), "--out", str(tmp_path), *FAST]
    patch, said = STOPS[stop]
    with monkeypatch.context() as m:
        patch(m)
        message = exit_message(args) if stop != "ctrl-c" else ctrl_c_message(args, capsys)
        assert said in message and f"{tmp_path / 'stage1'} has no checkpoint yet: the same command without " \
                                   f"--resume starts again" in message, message
        assert "intact" not in message
    run = tmp_path / "stage1"
    assert not (run / RunDir.PENDING).exists()
    assert "no checkpoint to resume; drop --resume" in exit_message([*args, "--resume"])
    capsys.readouterr()
    train.main(args)  # the same command again, nothing deleted by hand
    assert f"warning: {run} held a run stopped before its first checkpoint" in capsys.readouterr().out
    assert log_steps(run) == [1, 2, 2]  # the stopped run's lines are gone
    assert json.loads((run / RunDir.INFO).read_text())["step"] == 2


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(world, tmp_path, monkeypatch):
    args = ["--data", str(world), "--out", str(tmp_path), *FAST, "--max-steps", "4"]
    real, run = R.write_atomic, tmp_path / "stage1"

    def full_at_step_4(path, data):
        if path.name == RunDir.STATE and (run / RunDir.INFO).exists():  # the second checkpoint's train state
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)
    with monkeypatch.context() as m:
        m.setattr(R, "write_atomic", full_at_step_4)
        message = exit_message(args)
    assert message == f"train.py: {run}: the checkpoint of step 4 was not written (No space left on device); the " \
                      f"checkpoint of step 2 in {run} is intact: --resume continues from it"
    assert not (run / RunDir.PENDING).exists() and json.loads((run / RunDir.INFO).read_text())["step"] == 2
    train.main([*args, "--resume"])
    assert json.loads((run / RunDir.INFO).read_text())["step"] == 4


# ----------------------------------------------------------------------------- 4. unreadable weights, unwritable --out
def truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("command", ["rmpl.py", "stage 2 from it", "--resume"])
def test_a_truncated_weights_file_is_one_line(world, trained, tmp_path, capsys, command):
    out = copy_of(trained, tmp_path)
    weights = out / "stage1" / RunDir.MODEL
    truncated(weights)
    said = f"{weights}: not a readable safetensors file (Error while deserializing header"
    if command == "rmpl.py":
        assert said in rmpl_error(["--checkpoint", str(out / "stage1"), "--data", str(world)], capsys)
    else:
        argv = ["--resume"] if command == "--resume" else ["--stage", "2", *FAST]
        assert said in exit_message(["--data", str(world), "--out", str(out), *argv])


def refuse(call, err):
    """``call`` (os.mkdir, os.open) failing with errno ``err`` for paths in a run directory."""
    def refused(path, *a, **kw):
        if "stage1" in str(path):
            raise OSError(err, os.strerror(err), str(path))
        return call(path, *a, **kw)
    return refused


@pytest.mark.parametrize("case", ["a file", "read-only filesystem", "unwritable directory"])
def test_an_out_that_cannot_hold_a_run_is_one_line(world, tmp_path, monkeypatch, case):
    """(Through monkeypatched calls where a real one needs a mount or a user other than root.)"""
    out = tmp_path / "out"
    if case == "a file":
        out.write_text("not a directory")
        reason = "Not a directory"
    elif case == "read-only filesystem":
        monkeypatch.setattr(os, "mkdir", refuse(os.mkdir, errno.EROFS))
        reason = "Read-only file system"
    else:
        (out / "stage1").mkdir(parents=True)
        monkeypatch.setattr(os, "open", refuse(os.open, errno.EACCES))
        reason = "Permission denied"
    assert exit_message(["--data", str(world), "--out", str(out), *FAST]) == (
        f"train.py: {out / 'stage1'}: cannot create the run there ({reason}): --out must be a directory this user "
        f"can write")


# ----------------------------------------------------------------------------- 5, 6. what --resume keeps and creates
@pytest.mark.parametrize("flag, value, had", [("--model-size", "small", "tiny"), ("--vocab-size", "700", "600"),
                                              ("--max-text-len", "64", "128"), ("--lora-rank", "4", "0")])
def test_resume_refuses_flags_that_fix_the_network(world, trained, tmp_path, flag, value, had):
    out = copy_of(trained, tmp_path)
    info = (out / "stage1" / RunDir.INFO).read_text()
    message = exit_message(["--data", str(world), "--out", str(out), "--resume", "--max-steps", "3", flag, value])
    assert f"--resume: {flag} {value} (the run has {had}): these fix the network" in message
    assert (out / "stage1" / RunDir.INFO).read_text() == info


def test_resume_with_the_run_s_own_network_flags_goes_on(world, trained, tmp_path):
    out = copy_of(trained, tmp_path)
    train.main(["--data", str(world), "--out", str(out), "--resume", "--max-steps", "3", "--model-size", "tiny",
                "--vocab-size", "600"])
    assert json.loads((out / "stage1" / RunDir.INFO).read_text())["step"] == 3


def test_resume_without_a_run_creates_nothing(world, tmp_path):
    assert "no train_state.pt in" in exit_message(["--data", str(world), "--out", str(tmp_path), "--resume"])
    assert not (tmp_path / "stage1").exists()


# ----------------------------------------------------------------------------- 7. an adapter on another base
def test_an_adapter_on_another_base_says_what_to_do(world, trained, tmp_path, capsys):
    out = tmp_path / "lora"
    train.main(["--stage", "2", "--data", str(world), "--out", str(out), "--init", str(trained), *FAST,
                "--lora-rank", "4"])
    base = R.load_model(out / "stage2" / RunDir.MODEL)
    with torch.no_grad():
        next(base.parameters()).add_(1.0)
    R.save_model(base, out / "stage2" / RunDir.MODEL)  # another base of the same shape
    for message in (rmpl_error(["--checkpoint", str(out / "stage2"), "--data", str(world)], capsys),
                    exit_message(["--stage", "2", "--data", str(world), "--out", str(out), "--resume"])):
        assert "adapter.safetensors: this adapter was trained on another base" in message
        assert "put back that base's model.safetensors beside it, or start the stage again" in message
        assert "check_base" not in message  # no command can pass it


# ----------------------------------------------------------------------------- 8. file modes
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_write_atomic_gives_the_mode_of_a_plain_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        R.write_atomic(tmp_path / "atomic", b"x")
        (tmp_path / "plain").write_bytes(b"x")
    finally:
        os.umask(old)
    modes = [(tmp_path / name).stat().st_mode & 0o777 for name in ("atomic", "plain")]
    assert modes == [0o666 & ~umask] * 2


def test_checkpoint_files_are_as_readable_as_the_log(trained):
    mode = (trained / RunDir.LOG).stat().st_mode & 0o777
    for name in (RunDir.MODEL, RunDir.INFO, RunDir.STATE):
        assert (trained / name).stat().st_mode & 0o777 == mode, name


# ----------------------------------------------------------------------------- 9. every RNG comes back
def test_load_train_state_restores_every_rng(tmp_path):
    """An exact resume restores every generator the run might draw from, whether or not today's code draws from
    it (augmentations and dropout are added later): python's random, numpy's and torch's, as they were when the
    checkpoint was saved."""
    before = R.rng_states()
    try:
        run = RunDir(tmp_path)
        net = M.Seq2Seq(M.ModelConfig(vocab_size=500, **M.MODEL_SIZES["tiny"]))
        sampler = tensors.TaskSampler({"text_event": list(range(10))}, {"text_event": 1.0}, 2)
        random.random(), np.random.rand(), torch.rand(1)  # states other than the seeds' at the save
        run.save_checkpoint(net, torch.optim.AdamW(net.parameters()), sampler,
                            dict(stage=1, tasks=["text_event"], step=3, config=dict(lora_rank=0)))
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(1), np.random.seed(1), torch.manual_seed(1)  # the resuming process draws its own
        assert run.load_train_state(torch.optim.AdamW(net.parameters()), sampler) == 3
        assert random.getstate() == saved[0]
        assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), saved[1]))
        assert torch.equal(torch.get_rng_state(), saved[2])
    finally:
        R.set_rng_states(before)
