"""Checkpoints of a training run: written as one unit that a kill cannot tear, resumed exactly.

A run directory ``{out}/stage{k}/`` holds, per checkpoint, the weights (rmpl.MODEL_FILE, or
rmpl.ADAPTER_FILE beside the base for LoRA), rmpl.INFO_FILE (stage, tasks, step, TrainConfig) and
STATE_FILE (optimizer moments, sampler position, every RNG state, step, the weights' sha256). The
files of one step are staged in ``.pending/``, committed by an empty COMMITTED file, then moved in;
whatever a kill interrupts, the next start finds the previous checkpoint or the new one, whole.

What this file does not do: the training loop (train.py), the weights' file format (model.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import model as M
import rmpl

PENDING = ".pending"            # a checkpoint being written; "COMMITTED" inside it marks it whole
# optimizer, sampler, RNG states and step (beside rmpl.py's run files)
STATE_FILE = "train_state.pt"


def save_checkpoint(run: Path, net, cfg, tasks, opt, sampler, step: int) -> None:
    """The weights, rmpl.json and train_state.pt of one step, as one unit that a kill cannot tear.
    They are written into ``{run}/.pending/`` (each whole: model.write_atomic is temp file, fsync,
    rename), then the empty file COMMITTED is written there, then they are moved into the run
    (finish_checkpoint). A kill before COMMITTED leaves the previous checkpoint untouched and
    finish_checkpoint discards the pending one; a kill after it leaves a whole checkpoint that
    finish_checkpoint moves in. Non-finite weights are refused before anything is written, so a
    diverged run never replaces a good checkpoint. ``cfg`` is the run's train.TrainConfig."""
    # one fused pass; names on failure
    if not torch.isfinite(torch.nn.utils.get_total_norm(list(net.parameters()))):
        bad = ([n for n, p in net.named_parameters() if not torch.isfinite(p).all()]
               or ["(their norm overflows)"])
        raise M.CheckpointError(f"{run}: step {step}: non-finite weights in {', '.join(bad[:3])}"
                                f"{' ...' if len(bad) > 3 else ''}; checkpoint not written, "
                                f"the last one is kept")
    finish_checkpoint(run)  # one a kill interrupted; then .pending/ is free
    pending = run / PENDING
    pending.mkdir()
    weights = pending / (rmpl.ADAPTER_FILE if cfg.lora_rank else rmpl.MODEL_FILE)
    if cfg.lora_rank:
        M.save_adapter(net, weights, base_ref=str(run / rmpl.MODEL_FILE))
    else:
        M.save_model(net, weights)
    info = {"stage": cfg.stage, "tasks": list(tasks), "step": step, "config": asdict(cfg)}
    M.write_atomic(pending / rmpl.INFO_FILE, json.dumps(info, indent=1).encode())
    # ("MT19937", uint32 keys, pos, has_gauss, gauss): keys as a list for weights_only
    np_rng = np.random.get_state()
    rng = {"python": random.getstate(), "numpy": (np_rng[0], np_rng[1].tolist(), *np_rng[2:]),
           "torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    state = {"step": step, "weights_sha256": _sha256(weights), "optimizer": opt.state_dict(),
             "sampler": sampler.state_dict(), "rng": rng}
    buf = io.BytesIO()
    torch.save(state, buf)
    M.write_atomic(pending / STATE_FILE, buf.getvalue())
    M.write_atomic(pending / "COMMITTED", b"")  # the commit point
    finish_checkpoint(run)


def finish_checkpoint(run: Path) -> None:
    """Settle a checkpoint write that a kill may have interrupted: a committed ``{run}/.pending/``
    is moved into the run (file by file; a kill here is settled by the next call), an uncommitted
    one is deleted. Afterwards the run's files are one whole checkpoint: the new one or the previous
    one."""
    pending = run / PENDING
    if not pending.is_dir():
        return
    committed = (pending / "COMMITTED").exists()
    # COMMITTED stays to the end, so a kill in this loop is settled the same way
    for f in list(pending.iterdir()):
        if f.name == "COMMITTED":
            continue
        if committed:
            os.replace(f, run / f.name)
        else:
            f.unlink()  # the pending files, and temp files of a write that was cut off
    M.fsync_dir(run)
    (pending / "COMMITTED").unlink(missing_ok=True)
    pending.rmdir()
    M.fsync_dir(run)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_train_state(run: Path, cfg, opt, sampler) -> int:
    """Restore the optimizer moments, the sampler's position and every RNG; return the step. The
    weights are in the network already (build_model). ``weights_only=True`` unpickles tensors and
    plain containers only, so a tampered train_state.pt cannot run code; it is refused with a
    CheckpointError, as is a state that does not belong with the weights beside it (files copied
    from different checkpoints by hand: a kill cannot do it)."""
    path = run / STATE_FILE
    try:
        state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        raise M.CheckpointError(f"{path}: refused: it holds pickled objects other than tensors "
                                f"and plain containers (loading them could run code; train.py "
                                f"never writes any). torch: {str(e).splitlines()[0]}")
    except (RuntimeError, EOFError) as e:
        raise M.CheckpointError(f"{path}: not a readable train state ({e})")
    if not {"weights_sha256", "rng"} <= set(state):
        raise M.CheckpointError(f"{path}: written by an older train.py (no weights hash or RNG "
                                f"states); it cannot be resumed exactly")
    weights = run / (rmpl.ADAPTER_FILE if cfg.lora_rank else rmpl.MODEL_FILE)
    info = json.loads((run / rmpl.INFO_FILE).read_text())
    if state["weights_sha256"] != _sha256(weights) or info["step"] != state["step"]:
        raise M.CheckpointError(f"{run}: train_state.pt (step {state['step']}) does not belong "
                                f"with {weights.name} and rmpl.json (step {info['step']}): the "
                                f"files come from different checkpoints. The optimizer state of "
                                f"these weights is missing, so an exact resume is impossible; "
                                f"put back the matching files or start the stage again")
    now = asdict(cfg)
    changed = {k: (v, now.get(k)) for k, v in info["config"].items()
               if k != "resume" and now.get(k) != v}
    if changed:
        print("note: resuming with other settings than the checkpoint's (not the run it would "
              "have been): " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
    opt.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32),
                         *rng["numpy"][2:]))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["step"]
