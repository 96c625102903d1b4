"""Train RMPL-mini: ``python train.py --stage 1``, then ``python train.py --stage 2``.

Every knob is a field of ``TrainConfig``; ``PRESETS`` holds what differs per stage; argparse is built
from the fields, so ``python train.py --stage 2 --lr 3e-4 --max-steps 200`` works and tests import
``main(argv)``. Stage 1 trains the whole network from scratch on the unified multi-task mix (or, with
``--init CKPT``, LoRA adapters on a frozen base: the paper's setting); stage 2 starts from stage 1's
output and fine-tunes the whole network (``--lora-rank 16``: LoRA adapters instead; PRESETS says why).
What the stages and the loss are is rmpl.py's business; this file is the loop: AdamW, warmup + cosine
schedule from the step, gradient accumulation, clipping, dev loss and a quick dev score every
``eval_every`` steps and at the end, checkpoints that resume exactly.

A run writes to ``{out}/stage{k}/``: model.safetensors (base weights), adapter.safetensors (LoRA, if
any), tokenizer.model, rmpl.json (config and tasks), train_state.pt (optimizer, sampler, RNG, step),
log.jsonl (one line per log interval and per eval). A checkpoint is staged in ``.pending/`` and committed
as one unit (save_checkpoint), so a kill at any moment leaves the previous checkpoint or the new one.

``torchrun --nproc_per_node N train.py ...`` trains with DistributedDataParallel (gloo on CPU, nccl on
CUDA): ``--batch-size`` is per process, each rank takes its slice of one global batch (data.TaskSampler),
the loss is that of the global batch (rmpl.multitask_loss), and only rank 0 prints, evaluates and writes files.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import pickle
import random
import sys
import time
import warnings
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import data
import model as M
import rmpl
import schema as S


@dataclass
class TrainConfig:
    stage: int = 1
    data: str = "data/toy"       # a --data DIR (layout: README); the toy world is generated here on first use
    out: str = "runs"            # stage k writes {out}/stage{k}
    init: str = ""               # stage 1: a base checkpoint dir (then LoRA on the frozen base); stage 2: default {out}/stage1
    tasks: str = ""              # comma-separated tasks instead of the stage's (rmpl.STAGE_TASKS), for ablations
    model_size: str = "small"    # model.MODEL_SIZES (stage 1 from scratch only; otherwise the checkpoint's)
    seed: int = 0
    device: str = "auto"         # auto | cpu | cuda | mps
    resume: bool = False         # continue {out}/stage{k} from its train_state.pt
    max_steps: int = 2000
    batch_size: int = 32
    grad_accum: int = 1          # micro-batches per optimizer step
    lr: float = 1e-3
    min_lr: float = 1e-4         # cosine floor
    warmup_steps: int = 100
    beta2: float = 0.99          # AdamW; 0.95 learned more slowly here
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    lora_rank: int = 0           # 0 = full fine-tuning
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    vocab_size: int = 2000       # tokenizer size, schema tokens and byte pieces included (stage 1 from scratch only)
    log_every: int = 50
    eval_every: int = 500
    eval_batches: int = 4        # dev-loss batches per task
    dev_docs: int = 10           # M2E2 dev documents for the quick dev score (0: off)
    hflip: float = 0.5           # probability of mirroring a training image and its boxes


# What differs per stage. Stage 2 fine-tunes the whole network by default: on the toy dev split, LoRA (r=16
# on every attention projection, lr 1e-3) reached image / multimedia mention F1 44.9 / 53.3 where full
# fine-tuning (lr 5e-4) reached 54.1 / 60.4 from the same stage-1 model. A from-scratch 3M model has no
# pretrained features for a low-rank update to steer; LoRA stays one flag away (--lora-rank 16), and stage 1
# on a given base (--init) trains LoRA by default, the paper's setting.
PRESETS = {
    1: dict(max_steps=2000, lr=1e-3, lora_rank=0),
    2: dict(max_steps=600, lr=5e-4, lora_rank=0, warmup_steps=50),
}


def parse_args(argv=None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        presets = "; ".join(f"stage {k}: {v[f.name]}" for k, v in PRESETS.items() if f.name in v)
        help = f"default {f.default!r}" + (f" ({presets})" if presets else "")
        if f.type == "bool":
            p.add_argument(flag, action="store_true", default=None, help=help)
        else:
            p.add_argument(flag, type={"int": int, "float": float, "str": str}[f.type], default=None, help=help)
    given = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    stage = given.get("stage", 1)
    if stage not in PRESETS:
        p.error(f"--stage must be 1 or 2, not {stage}")
    unknown = set(given.get("tasks", "").split(",")) - set(S.TASKS) - {""}
    if unknown:
        p.error(f"--tasks: unknown {sorted(unknown)}; known: {', '.join(S.TASKS)}")
    if given.get("model_size", "base") not in M.MODEL_SIZES:
        p.error(f"--model-size must be one of {', '.join(M.MODEL_SIZES)}")
    if stage == 1 and given.get("init") and "lora_rank" not in given:
        given["lora_rank"] = 16  # stage 1 on a given base: LoRA on the frozen base (the paper's setting)
    return TrainConfig(**{**PRESETS[stage], **given})


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr`` at ``max_steps``: a function of the step alone."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


# ============================================================================= set-up
@contextmanager
def warnings_as_lines():
    """The readers' and task builders' counted skips, printed as one ``warning: ...`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"warning: {w.message}")


def ensure_data(path: str) -> Path:
    """--data as given; the default (the toy world) is generated on first use, any other must exist."""
    root = Path(path)
    if not root.exists():
        if path != TrainConfig.data:
            sys.exit(f"train.py: --data {root} does not exist")
        import toy
        print(f"generating the toy world in {root} (first use; `python toy.py --out {root}` does the same) ...")
        toy.generate(root, seed=0)
    return root


def load_data(cfg: TrainConfig) -> data.Sources:
    root = ensure_data(cfg.data)
    with warnings_as_lines():
        try:
            sources = data.read_sources(root)
        except data.DataError as e:  # names the file, the record and the problem: no traceback needed
            sys.exit(f"train.py: {e}")
    return sources


def build_model(cfg: TrainConfig, src: data.Sources, run: Path, master: bool = True) -> tuple[M.Seq2Seq, data.Tokenizer]:
    """Stage 1 from scratch: a new tokenizer (training text only) and network. Otherwise: the --init checkpoint
    (stage 2 default: {out}/stage1), whose base weights are copied into this run so it stands on its own.
    --resume: the run's own tokenizer and weights (base + adapter), nothing re-trained or re-copied; the new
    network's random init is overwritten, and load_train_state then restores the RNGs it used up. Under DDP every
    rank builds the same tokenizer and network (Tokenizer.train is byte-deterministic); only the master writes."""
    init = Path(cfg.init) if cfg.init else (Path(cfg.out) / "stage1" if cfg.stage == 2 else None)
    run.mkdir(parents=True, exist_ok=True)
    if cfg.resume:
        needed = ["train_state.pt", "rmpl.json", "tokenizer.model", "model.safetensors"]
        for name in needed + ["adapter.safetensors"] * bool(cfg.lora_rank):
            if not (run / name).is_file():
                sys.exit(f"train.py: --resume: no {name} in {run} (no checkpoint to resume; drop --resume to start)")
        tok, net = data.Tokenizer.load(run / "tokenizer.model"), M.load_model(run / "model.safetensors")
        if cfg.lora_rank:  # the file's LoRA layers on the run's base (load_adapter checks the base hash)
            M.mark_only_lora_as_trainable(M.load_adapter(net, run / "adapter.safetensors"))
        return net, tok
    if init is None:
        texts = [s.words for s in src.ace.get("train", [])] + [r.words for r in src.mnre.get("train", [])]
        tok = data.Tokenizer.train(texts, vocab_size=cfg.vocab_size, seed=cfg.seed)
        net = M.Seq2Seq(M.ModelConfig(vocab_size=tok.vocab_size, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id,
                                      **M.MODEL_SIZES[cfg.model_size]))
        if cfg.lora_rank:
            sys.exit("train.py: --lora-rank needs a base to adapt: pass --init CKPT (or --lora-rank 0)")
    else:
        if not (init / "model.safetensors").exists():
            sys.exit(f"train.py: no model.safetensors in {init} (run stage 1 first, or pass --init)")
        tok = data.Tokenizer.load(init / "tokenizer.model")
        net = M.load_model(init / "model.safetensors")
        if (init / "adapter.safetensors").exists():  # an adapted base: bake the adapter in first
            M.merge_lora(M.load_adapter(net, init / "adapter.safetensors"))
            net = _plain_copy(net)
        if run.resolve() != init.resolve() and master:
            M.save_model(net, run / "model.safetensors")
    if master:
        tok.save(run / "tokenizer.model")
    if cfg.lora_rank:
        M.add_lora(net, r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout)
        M.mark_only_lora_as_trainable(net)
    return net, tok


def _plain_copy(net: M.Seq2Seq) -> M.Seq2Seq:
    """A LoRA-free network holding the (merged) weights of ``net``."""
    plain = M.Seq2Seq(net.cfg)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if "lora_" not in k})
    return plain


# ============================================================================= checkpoints
PENDING = ".pending"  # a checkpoint being written; "COMMITTED" inside it marks it whole


def save_checkpoint(run: Path, net, cfg: TrainConfig, tasks, opt, sampler, step: int) -> None:
    """The weights, rmpl.json and train_state.pt of one step, as one unit that a kill cannot tear. They are
    written into ``{run}/.pending/`` (each whole: model.write_atomic is temp file, fsync, rename), then the
    empty file COMMITTED is written there, then they are moved into the run (finish_checkpoint). A kill before
    COMMITTED leaves the previous checkpoint untouched and finish_checkpoint discards the pending one; a kill
    after it leaves a whole checkpoint that finish_checkpoint moves in. Non-finite weights are refused before
    anything is written, so a diverged run never replaces a good checkpoint."""
    if not torch.isfinite(torch.nn.utils.get_total_norm(list(net.parameters()))):  # one fused pass; names on failure
        bad = [n for n, p in net.named_parameters() if not torch.isfinite(p).all()] or ["(their norm overflows)"]
        raise M.CheckpointError(f"{run}: step {step}: non-finite weights in {', '.join(bad[:3])}"
                                f"{' ...' if len(bad) > 3 else ''}; checkpoint not written, the last one is kept")
    finish_checkpoint(run)  # one a kill interrupted; then .pending/ is free
    pending = run / PENDING
    pending.mkdir()
    weights = pending / ("adapter.safetensors" if cfg.lora_rank else "model.safetensors")
    if cfg.lora_rank:
        M.save_adapter(net, weights, base_ref=str(run / "model.safetensors"))
    else:
        M.save_model(net, weights)
    info = {"stage": cfg.stage, "tasks": list(tasks), "step": step, "config": asdict(cfg)}
    M.write_atomic(pending / "rmpl.json", json.dumps(info, indent=1).encode())
    np_rng = np.random.get_state()  # ("MT19937", uint32 keys, pos, has_gauss, gauss): keys as a list for weights_only
    rng = {"python": random.getstate(), "numpy": (np_rng[0], np_rng[1].tolist(), *np_rng[2:]),
           "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    state = {"step": step, "weights_sha256": _sha256(weights), "optimizer": opt.state_dict(),
             "sampler": sampler.state_dict(), "rng": rng}
    buf = io.BytesIO()
    torch.save(state, buf)
    M.write_atomic(pending / "train_state.pt", buf.getvalue())
    M.write_atomic(pending / "COMMITTED", b"")  # the commit point
    finish_checkpoint(run)


def finish_checkpoint(run: Path) -> None:
    """Settle a checkpoint write that a kill may have interrupted: a committed ``{run}/.pending/`` is moved into
    the run (file by file; a kill here is settled by the next call), an uncommitted one is deleted. Afterwards
    the run's files are one whole checkpoint: the new one or the previous one."""
    pending = run / PENDING
    if not pending.is_dir():
        return
    committed = (pending / "COMMITTED").exists()
    for f in list(pending.iterdir()):  # COMMITTED stays to the end, so a kill in this loop is settled the same way
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


def load_train_state(run: Path, cfg: TrainConfig, opt, sampler) -> int:
    """Restore the optimizer moments, the sampler's position and every RNG; return the step. The weights are in
    the network already (build_model). ``weights_only=True`` unpickles tensors and plain containers only, so a
    tampered train_state.pt cannot run code; it is refused with a CheckpointError, as is a state that does not
    belong with the weights beside it (files copied from different checkpoints by hand: a kill cannot do it)."""
    path = run / "train_state.pt"
    try:
        state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        raise M.CheckpointError(f"{path}: refused: it holds pickled objects other than tensors and plain containers "
                                f"(loading them could run code; train.py never writes any). "
                                f"torch: {str(e).splitlines()[0]}")
    except (RuntimeError, EOFError) as e:
        raise M.CheckpointError(f"{path}: not a readable train state ({e})")
    if not {"weights_sha256", "rng"} <= set(state):
        raise M.CheckpointError(f"{path}: written by an older train.py (no weights hash or RNG states); "
                                f"it cannot be resumed exactly")
    weights = run / ("adapter.safetensors" if cfg.lora_rank else "model.safetensors")
    info = json.loads((run / "rmpl.json").read_text())
    if state["weights_sha256"] != _sha256(weights) or info["step"] != state["step"]:
        raise M.CheckpointError(f"{run}: train_state.pt (step {state['step']}) does not belong with {weights.name} "
                                f"and rmpl.json (step {info['step']}): the files come from different checkpoints. "
                                f"The optimizer state of these weights is missing, so an exact resume is impossible; "
                                f"put back the matching files or start the stage again")
    now = asdict(cfg)
    changed = {k: (v, now.get(k)) for k, v in info["config"].items() if k != "resume" and now.get(k) != v}
    if changed:
        print("note: resuming with other settings than the checkpoint's (not the run it would have been): "
              + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
    opt.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["step"]


# ============================================================================= evaluation
def example_losses(net, items: list[dict], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example mean token CE, target token counts and task ids of encoded examples.

    Text-only examples and examples with an image go through the network as two sub-batches: in one
    mixed batch every text example would carry the image's masked patch slots (64 at the default size)
    through every encoder layer. The losses are the same; the compute is not.
    """
    pad_id = getattr(net, "module", net).cfg.pad_id  # a DDP wrapper keeps the network in .module
    out = []
    for group in ([e for e in items if not e["has_image"]], [e for e in items if e["has_image"]]):
        if group:
            batch = {k: v.to(device) for k, v in data.collate(group, pad_id).items()}
            _, per_example = net(batch, reduction="none")
            out.append((per_example.float(), (batch["target_ids"] != pad_id).sum(1), batch["task_ids"]))
    return tuple(torch.cat(parts) for parts in zip(*out))


@torch.no_grad()
def dev_loss(net, dev: dict, cfg: TrainConfig, device, batch_size: int) -> dict[str, float]:
    """Mean token cross-entropy per task on the first ``eval_batches`` batches of each dev task (global batches
    under DDP: the same dev examples whatever the number of processes)."""
    net.eval()
    out = {}
    for task, encoded in dev.items():
        total = n = 0
        for i in range(0, min(len(encoded), cfg.eval_batches * batch_size), batch_size):
            per_example, tokens, _ = example_losses(net, encoded[i:i + batch_size], device)
            total, n = total + (per_example * tokens).sum().item(), n + tokens.sum().item()
        out[task] = total / max(n, 1)
    net.train()
    return out


def quick_score(net, tok, tasks, gold: data.M2E2 | None, n_docs: int) -> dict[str, float]:
    """Strict F1 of the six cells on the first ``n_docs`` M2E2 dev documents (a progress signal, not a result)."""
    if gold is None or n_docs <= 0:
        return {}
    import evaluate
    docs = sorted({S.doc_id(k) for k in gold.sentences})[:n_docs]
    sub = data.M2E2({k: s for k, s in gold.sentences.items() if S.doc_id(k) in docs},
                    {k: i for k, i in gold.images.items() if S.doc_id(k) in docs},
                    [l for l in gold.links if S.doc_id(l.sentence_id) in docs])
    was_training = net.training
    pred = rmpl.RMPL(net, tok, tasks).predict(list(sub.sentences.values()), list(sub.images.values()))
    net.train(was_training)
    cells = evaluate.score(sub, pred)
    return {k: v["f1"] for k, v in cells.items() if isinstance(v, dict)}


# ============================================================================= the loop
def main(argv=None) -> dict:
    cfg = parse_args(argv)
    set_seed(cfg.seed)  # the same on every rank: the same initial weights (DDP also broadcasts rank 0's)
    device = pick_device(cfg.device)
    ddp = int(os.environ.get("RANK", -1)) != -1  # started by torchrun: one process per device
    rank, world = 0, 1
    if ddp:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}")
            torch.cuda.set_device(device)
    master = rank == 0  # prints, evaluates, writes the log and the checkpoints
    if not master:
        sys.stdout = open(os.devnull, "w")  # one copy of every message; errors (stderr) still show
    run = Path(cfg.out) / f"stage{cfg.stage}"
    if master and run.is_dir():
        finish_checkpoint(run)  # a checkpoint write cut off by a kill: completed or discarded, before anyone reads
    if ddp and not master:
        dist.barrier()  # wait while rank 0 settles the run and generates the toy world (first use)
    src = load_data(cfg)
    if ddp and master:
        dist.barrier()
    net, tok = build_model(cfg, src, run, master)
    net.to(device).train()
    # find_unused_parameters: a slice without images leaves the vision tower out of the graph.
    # broadcast_buffers=False: DDP would broadcast the BatchNorm statistics at every forward, a collective
    # that hangs when ranks make different numbers of forwards (a slice without images makes one fewer)
    model = (torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=True, broadcast_buffers=False)
             if ddp else net)
    tasks = tuple(cfg.tasks.split(",")) if cfg.tasks else rmpl.STAGE_TASKS[cfg.stage]

    def split(name):
        return rmpl.build_tasks(tasks, src.ace.get(name, []), src.swig.get(name, []), src.mnre.get(name, []))

    cut = Counter()  # truncated inputs/targets, reported once

    def encode(examples):
        return [data.encode_example(e, tok, net.cfg.image_size, net.cfg.max_text_len, net.cfg.max_target_len, counts=cut)
                for e in examples]

    try:
        with warnings_as_lines():
            train = {t: encode(exs) for t, exs in split("train").items()}
            dev = {t: encode(exs) for t, exs in split("dev").items()}
    except ValueError as e:  # DataError: an image that does not decode
        sys.exit(f"train.py: {e}")
    if cut["input_truncated"] or cut["target_truncated"]:
        print(f"warning: of {cut['examples']} examples, {cut['input_truncated']} prompts were cut to "
              f"max_text_len={net.cfg.max_text_len} and {cut['target_truncated']} targets to max_target_len={net.cfg.max_target_len}")
    if not train:
        sys.exit(f"train.py: {cfg.data} has no training data for the tasks of stage {cfg.stage} ({', '.join(tasks)})")
    sampler = data.TaskSampler(train, rmpl.task_sampling_weights(train), cfg.batch_size, seed=cfg.seed,
                               rank=rank, world_size=world, hflip=cfg.hflip)  # one global batch; its state is the same on all ranks
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, cfg.beta2))
    try:
        start = load_train_state(run, cfg, opt, sampler) if cfg.resume else 0
    except M.CheckpointError as e:
        sys.exit(f"train.py: --resume: {e}")

    n_params = sum(p.numel() for p in net.parameters())
    print(f"stage {cfg.stage}: tasks {', '.join(f'{t} ({len(v)})' for t, v in train.items())}; "
          f"{n_params / 1e6:.2f}M parameters; device {device}" + (f" x {world} processes" if ddp else ""))
    if cfg.lora_rank:
        M.print_trainable_parameters(net)
    log = open(run / "log.jsonl", "a") if master else open(os.devnull, "w")
    if cfg.resume:  # lines after this one replace those of the interrupted run past `step`
        log.write(json.dumps({"step": start, "resumed": True}) + "\n")
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, disable=None if master else True, desc=f"stage {cfg.stage}")
    t0, record = time.time(), {}
    for step in bar:
        lr = get_lr(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = 0.0  # the step's loss: the mean over its micro-batches (their per-task parts: the last one's)
        for micro in range(cfg.grad_accum):
            # under DDP, gradients are all-reduced once per step: at the last micro-batch's backward
            with model.no_sync() if ddp and micro + 1 < cfg.grad_accum else nullcontext():
                with autocast:  # under DDP: this rank's share of the global batch's loss (rmpl.multitask_loss)
                    part, parts = rmpl.multitask_loss(*example_losses(model, next(sampler), device),
                                                      all_reduce=dist.all_reduce if ddp else None)
                # DDP averages gradients over ranks, hence * world; / grad_accum: the mean over micro-batches
                (part * world / cfg.grad_accum).backward()
            loss = loss + part.detach() / cfg.grad_accum
        if ddp:  # log the global loss: the sum of the ranks' shares
            dist.all_reduce(loss)
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if not torch.isfinite(loss.detach() + norm):  # checked before the update, so the weights stay finite
            sys.exit(f"train.py: step {step + 1}: non-finite loss {loss.item()} or gradient norm {norm.item()}; "
                     f"stopped without updating or saving (the last checkpoint in {run} is intact). "
                     f"A lower --lr (now {cfg.lr}) or --grad-clip may help; --resume continues from the checkpoint")
        opt.step()
        opt.zero_grad(set_to_none=True)

        last = step + 1 == cfg.max_steps
        if (step + 1) % cfg.log_every == 0 or last:
            record = {"step": step + 1, "loss": round(loss.item(), 4), "lr": lr, "grad_norm": round(norm.item(), 3),
                      "tasks": {t: round(v, 4) for t, v in parts.items()}, "elapsed_s": round(time.time() - t0, 1)}
            bar.write(f"step {step + 1:5d} | loss {loss.item():.4f} | lr {lr:.2e} | norm {norm.item():6.3f} | "
                      f"{record['elapsed_s']:7.1f}s")
            log.write(json.dumps(record) + "\n")
            log.flush()
        if master and ((step + 1) % cfg.eval_every == 0 or last):  # the other ranks wait at the next all_reduce
            record = {"step": step + 1, "dev_loss": dev_loss(net, dev, cfg, device, cfg.batch_size * world),
                      "dev_f1": quick_score(net, tok, tasks, src.m2e2.get("dev"), cfg.dev_docs)}
            bar.write(f"eval {step + 1:5d} | dev loss " + " ".join(f"{t} {v:.3f}" for t, v in record["dev_loss"].items())
                      + " | dev F1 " + " ".join(f"{t} {v:.1f}" for t, v in record["dev_f1"].items()))
            log.write(json.dumps(record) + "\n")
            log.flush()
            try:
                save_checkpoint(run, net, cfg, tasks, opt, sampler, step + 1)
            except M.CheckpointError as e:  # this step's update made weights non-finite (an infinite --lr, say)
                sys.exit(f"train.py: {e}")
    log.close()
    print(f"stage {cfg.stage} done in {time.time() - t0:.0f}s: {run}")
    if ddp:
        dist.destroy_process_group()
    return record


if __name__ == "__main__":
    main()
