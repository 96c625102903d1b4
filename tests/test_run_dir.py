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
import toy
import train
from run import RunDir

TINY = dict(ace_train=24, ace_dev=8, ace_test=8, swig_train=16, swig_dev=6, swig_test=6, mnre_train=12, mnre_dev=4,
            mnre_test=4, m2e2_dev=2, m2e2_test=2)
FAST = ["--max-steps", "2", "--batch-size", "4", "--eval-every", "2", "--eval-batches", "1", "--dev-docs", "0",
        "--model-size", "tiny", "--vocab-size", "600", "--log-every", "1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return toy.generate(tmp_path_factory.mktemp("toy"), seed=0, **TINY)


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


# ----------------------------------------------------------------------------- 4. unreadable weights
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
