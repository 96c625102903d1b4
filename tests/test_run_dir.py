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
