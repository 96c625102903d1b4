"""Train RMPL-mini: ``python train.py --stage 1``, then ``python train.py --stage 2``.

Every knob is a field of ``TrainConfig``; ``PRESETS`` holds what differs per stage; argparse is
built from the fields, so ``python train.py --stage 2 --lr 3e-4 --max-steps 200`` works and tests
import ``main(argv)``. Stage 1 trains the whole network from scratch on the unified multi-task mix
(or, with ``--init CKPT``, LoRA adapters on a frozen base: the paper's setting); stage 2 starts from
stage 1's output and fine-tunes the whole network (``--lora-rank 16``: LoRA adapters instead;
PRESETS says why). What the stages and the loss are is tasks.py's business; this file is the loop
(``Trainer``): AdamW, warmup + cosine schedule from the step, gradient accumulation, clipping, dev
loss and a quick dev score every ``eval_every`` steps and at the end, checkpoints that resume
exactly.

A run writes to ``{out}/stage{k}/``, a run.RunDir: the weights, the tokenizer, rmpl.json, the
training state and log.jsonl; its checkpoints are one unit that a kill cannot tear.

``torchrun --nproc_per_node N train.py ...`` trains with DistributedDataParallel (gloo on CPU, nccl
on CUDA): ``--batch-size`` is per process, each rank takes its slice of one global batch
(tensors.TaskSampler), the loss is that of the global batch (tasks.multitask_loss), and only rank 0
prints, evaluates and writes files.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import data
import distributed
import evaluate
import lora
import model as M
import rmpl
import schema as S
import tensors
import toy
from run import CheckpointError, RunDir
from tasks import STAGE_TASKS, TASK_SOURCE, build_tasks, multitask_loss, task_sampling_weights


def knob(default, help: str):
    """A TrainConfig field and its --help text."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    stage: int = knob(1, "1: text EE + visual EE + multimedia RE in one schema; 2: EMI + ARE "
                         "from stage 1")
    data: str = knob(toy.DEFAULT_DATA, "a data directory (layout: docs/real_data.md); the default, "
                                       "the repository's toy world, is generated on first use")
    out: str = knob("runs", "runs directory: stage k writes OUT/stagek")
    init: str = knob("", "the checkpoint to start from. Stage 2: default OUT/stage1. Stage 1: a "
                         "base model, whose frozen weights then get LoRA adapters (--lora-rank 16 "
                         "unless given)")
    tasks: str = knob("", "comma-separated tasks instead of the stage's (ablations): "
                          + ", ".join(S.TASKS))
    model_size: str = knob("small", "network size for stage 1 from scratch (later stages keep the "
                                    "checkpoint's): " + ", ".join(M.MODEL_SIZES))
    seed: int = knob(0, "seed of the weights, the sampler and every RNG")
    device: str = knob("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    resume: bool = knob(False, "continue OUT/stagek from its last checkpoint; flags not given are "
                               "the run's")
    max_steps: int = knob(1500, "optimizer steps")
    batch_size: int = knob(32, "examples per micro-batch and process (x --grad-accum per step); "
                               "x processes, at most the stage's training examples (all tasks)")
    grad_accum: int = knob(1, "micro-batches per optimizer step")
    lr: float = knob(1e-3, "peak learning rate, after the linear warmup")
    min_lr: float = knob(1e-4, "floor of the cosine decay, reached at --max-steps")
    warmup_steps: int = knob(100, "steps of linear warmup")
    beta2: float = knob(0.99, "AdamW's second-moment decay")
    weight_decay: float = knob(0.01, "AdamW weight decay of weight matrices (not of biases and "
                                     "norms)")
    grad_clip: float = knob(1.0, "largest gradient norm of a step: a larger one is scaled down "
                                 "to it (0: no clipping; the norm is still logged)")
    lora_rank: int = knob(0, "LoRA rank r; 0 fine-tunes every weight")
    lora_alpha: float = knob(32.0, "LoRA alpha: the update is scaled by alpha / r")
    lora_dropout: float = knob(0.05, "dropout on the LoRA input")
    vocab_size: int = knob(2000, "tokenizer size, schema tokens and byte pieces included (stage 1 "
                                 "from scratch only); 2000 fits the toy world, real news text "
                                 "wants more (1.44 pieces per word on M2E2 dev at 4000)")
    max_text_len: int = knob(128, "prompt positions (stage 1 from scratch only; later stages "
                                  "keep the checkpoint's): longer prompts are cut, and words "
                                  "past the cut can be neither read nor extracted")
    tag_weight: float = knob(0.0, "weight of the encoder's trigger tagging: an event type (or "
                                  "none) for each word of a text_event / text_mention prompt, "
                                  "one more prediction of the sentence (stage 1 from scratch "
                                  "only; later stages keep the checkpoint's); 0: no tagger")
    log_every: int = knob(50, "steps between log lines")
    eval_every: int = knob(500, "steps between dev evaluations and checkpoints (and the last step)")
    eval_batches: int = knob(4, "dev-loss batches per task at each evaluation (0: no dev loss)")
    dev_docs: int = knob(10, "M2E2 dev documents of the quick dev F1 at each evaluation (0: off)")
    keep_best: str = knob("", "a quick dev F1 cell (" + ", ".join(evaluate.CELLS) + "): the "
                              "weights of its best evaluation are kept in OUT/stagek/best, which "
                              "--init and rmpl.py --checkpoint take (early stopping); '': none")
    flip_prob: float = knob(0.5, "probability of mirroring a training image with its boxes")


# What differs per stage. Stage 2 fine-tunes the whole network by default, which beat LoRA on the
# toy dev split (experiments/vision.md, "earlier choices"): a from-scratch 3M model has no
# pretrained features for a low-rank update to steer. LoRA stays one flag away (--lora-rank 16),
# and stage 1 on a given base (--init) trains LoRA by default, the paper's setting.
PRESETS = {
    1: dict(max_steps=1500, lr=1e-3, lora_rank=0),
    2: dict(max_steps=450, lr=5e-4, lora_rank=0, warmup_steps=50),
}
# fixed when a run starts (the network's shape, its LoRA layers): --resume keeps the run's.
# SIZES: of a network trained from scratch
SIZES = ("model_size", "vocab_size", "max_text_len", "tag_weight")
NETWORK = (*SIZES, "lora_rank", "lora_alpha", "lora_dropout")
AT_LEAST = dict(stage=1, max_steps=1, batch_size=1, grad_accum=1, warmup_steps=0, lora_rank=0,
                log_every=1, eval_every=1, eval_batches=0, dev_docs=0, vocab_size=1, max_text_len=8,
                tag_weight=0.0, lr=0.0, min_lr=0.0, grad_clip=0.0, flip_prob=0.0)


def parse_args(argv=None) -> TrainConfig:
    """The command line -> TrainConfig: what is given, else the stage's PRESETS, else the field's
    default. With --resume, what is not given is the run's own setting (its rmpl.json)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(TrainConfig):
        # a knob of PRESETS: every stage's default, the field's where a stage has none
        per_stage = "; ".join(f"stage {k}: {v.get(f.name, f.default)}" for k, v in PRESETS.items())
        staged = any(f.name in v for v in PRESETS.values())
        help = f"{f.metadata['help']} (default {per_stage if staged else repr(f.default)})"
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action="store_true", default=None, help=help)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            p.add_argument(flag, type=kind, default=None, help=help, metavar=f.name.upper())
    given = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    for name, least in AT_LEAST.items():
        if given.get(name, least) < least:
            p.error(f"--{name.replace('_', '-')} must be at least {least}, not {given[name]}")
    if given.get("flip_prob", 0.0) > 1:
        p.error(f"--flip-prob is a probability, not {given['flip_prob']}")
    stage = given.get("stage", 1)
    if stage not in PRESETS:
        p.error(f"--stage must be 1 or 2, not {stage}")
    unknown = set(given.get("tasks", "").split(",")) - set(S.TASKS) - {""}
    if unknown:
        p.error(f"--tasks: unknown {sorted(unknown)}; known: {', '.join(S.TASKS)}")
    if given.get("keep_best", "") not in ("", *evaluate.CELLS):
        p.error(f"--keep-best must be one of {', '.join(evaluate.CELLS)}, not "
                f"{given['keep_best']!r}")
    if given.get("model_size", "small") not in M.MODEL_SIZES:
        p.error(f"--model-size must be one of {', '.join(M.MODEL_SIZES)}")
    out = Path(given.get("out", TrainConfig.out))
    if given.get("resume"):
        names = {f.name for f in fields(TrainConfig)} - {"resume"}
        cfg = TrainConfig(**{**PRESETS[stage], **run_settings(out / f"stage{stage}", names),
                             **given})
    else:
        if stage == 1 and given.get("init") and "lora_rank" not in given:
            # stage 1 on a given base: LoRA on the frozen base (the paper's setting)
            given["lora_rank"] = 16
        if stage == 1 and not given.get("init") and given.get("lora_rank"):
            p.error("--lora-rank needs a base to adapt: pass --init CKPT (or --lora-rank 0)")
        if stage == 2 or given.get("init"):  # the network comes from a checkpoint, sizes and all
            had = run_settings(Path(given.get("init") or out / "stage1"), SIZES)
            for k in (k for k in had if given.get(k, had[k]) != had[k]):
                p.error(f"--{k.replace('_', '-')} {given[k]}: the network this stage starts from "
                        f"has {had[k]}, and a stage that starts from a checkpoint keeps it")
            given = {**had, **given}
        cfg = TrainConfig(**{**PRESETS[stage], **given})
    if cfg.keep_best and not cfg.dev_docs:
        p.error(f"--keep-best {cfg.keep_best} chooses by the quick dev F1, which --dev-docs 0 "
                f"turns off")
    if cfg.min_lr > cfg.lr:  # the defaults count too: --lr 5e-5 alone is under min_lr's 1e-4
        p.error(f"--min-lr {cfg.min_lr} is above --lr {cfg.lr}: the cosine would climb from the "
                f"peak to the floor; give --min-lr at most --lr")
    return cfg


def run_settings(run: Path, names) -> dict:
    """The settings ``names`` a run was started with (its rmpl.json), {} when it has none (what
    is missing is said where the run is opened)."""
    info = run / RunDir.INFO
    if not info.is_file():
        return {}
    return {k: v for k, v in json.loads(info.read_text())["config"].items() if k in names}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr`` at ``max_steps``: a function of the step
    alone."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


# ============================================================================= set-up
def load_data(cfg: TrainConfig) -> data.Sources:
    root = toy.ensure_data(cfg.data)
    print(f"reading {root} ...")
    with evaluate.warnings_as_lines(sys.stdout):
        try:
            return data.read_sources(root)
        except data.DataError as e:  # it names the file, the record and the problem
            sys.exit(f"train.py: {e}")


def init_dir(cfg: TrainConfig) -> RunDir | None:
    """The run a fresh stage starts from: --init, stage 2's default {out}/stage1, or None
    (scratch)."""
    if cfg.init:
        return RunDir(cfg.init)
    return RunDir(Path(cfg.out) / "stage1") if cfg.stage == 2 else None


def check_run_dir(cfg: TrainConfig, run: RunDir) -> None:
    """Rank 0, before any data is read: refuse a stage with nothing to start from, take the run
    directory (RunDir.take: one train.py at a time, a checkpoint to resume or none to overwrite),
    and refuse a resume that would change the network."""
    init = init_dir(cfg)
    if not cfg.resume and init is not None and not init.has_model():
        sys.exit(f"train.py: no {RunDir.MODEL} in {init} "
                 f"(run stage 1 first, or pass --init CKPT)")
    try:
        with evaluate.warnings_as_lines(sys.stdout):  # a filesystem that cannot lock
            run.take(cfg.resume)
    except CheckpointError as e:
        sys.exit(f"train.py: {e}")
    if cfg.resume:
        had = run.info()["config"]
        wrong = [f"--{k.replace('_', '-')} {getattr(cfg, k)} (the run has {had[k]})"
                 for k in NETWORK if k in had and getattr(cfg, k) != had[k]]
        if wrong:
            sys.exit(f"train.py: --resume: {', '.join(wrong)}: these fix the network, which a "
                     f"resumed run keeps; drop them, or start a new run with --out DIR")


def open_network(cfg: TrainConfig, src: data.Sources, run: RunDir,
                 master: bool = True) -> tuple[M.Seq2Seq, tensors.Tokenizer]:
    """The network and tokenizer a stage starts from: its own checkpoint (--resume), the run it
    starts from (--init, or stage 1 for stage 2), or nothing (stage 1 from scratch). With
    ``--lora-rank``, LoRA layers are added and only they train. Under DDP every rank builds the
    same tokenizer and network (Tokenizer.train is byte-deterministic); only the master writes."""
    if cfg.resume:
        return resume_network(run)
    init = init_dir(cfg)
    if init is None:
        net, tok = new_network(cfg, src)
    else:  # an adapter beside its base is baked in; the base is copied, so the run stands alone
        try:
            net, tok = init.open(lora="merged")
        except (ValueError, OSError) as e:  # CheckpointError, DataError (the tokenizer)
            sys.exit(f"train.py: {e}")
        if run.path.resolve() != init.path.resolve() and master:
            run.save_base(net)
    if master:
        run.save_tokenizer(tok)
    if cfg.lora_rank:
        lora.add_lora(net, r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout)
        lora.mark_only_lora_as_trainable(net)
    return net, tok


def new_network(cfg: TrainConfig, src: data.Sources) -> tuple[M.Seq2Seq, tensors.Tokenizer]:
    """Stage 1 from scratch: a tokenizer trained on the training text alone, and a fresh network."""
    texts = ([s.words for s in src.ace.get("train", [])]
             + [r.words for r in src.mnre.get("train", [])])
    if not texts:
        sys.exit(f"train.py: {cfg.data} has no training sentences (ace/train.json, mnre/train.txt) "
                 f"to build the tokenizer from")
    try:
        tok = tensors.Tokenizer.train(texts, vocab_size=cfg.vocab_size, seed=cfg.seed)
    except ValueError as e:  # fewer pieces than schema tokens + 256 bytes + the text's characters
        sys.exit(f"train.py: --vocab-size {cfg.vocab_size} is too small for this training text "
                 f"({e})")
    return M.Seq2Seq(M.ModelConfig(vocab_size=tok.vocab_size, **M.MODEL_SIZES[cfg.model_size],
                                   max_text_len=cfg.max_text_len, tag_weight=cfg.tag_weight)), tok


def resume_network(run: RunDir) -> tuple[M.Seq2Seq, tensors.Tokenizer]:
    """--resume: the run's own tokenizer and weights (base + trainable adapter), nothing
    re-trained or re-copied (RunDir.take saw them there). Building the network draws its random
    init, which the weights overwrite; load_train_state then restores the RNG states of the
    interrupted run."""
    try:
        return run.open(lora="trainable")
    except (ValueError, OSError) as e:
        sys.exit(f"train.py: --resume: {e}")


# ============================================================================= data
def load_run_data(cfg: TrainConfig, env: distributed.Dist) -> data.Sources:
    """Read --data; the other ranks wait meanwhile, since rank 0 may also be checking and settling
    the run directory (check_run_dir) and generating the toy world."""
    if env.ddp and not env.master:
        dist.barrier()
    src = load_data(cfg)
    if env.ddp and env.master:
        dist.barrier()
    return src


def warn_missing_sources(cfg: TrainConfig, tasks, src: data.Sources) -> None:
    """One warning per source without training data, naming the tasks the stage goes without."""
    lost = {}
    for task in (t for t in tasks if not getattr(src, TASK_SOURCE[t]).get("train")):
        lost.setdefault(TASK_SOURCE[task], []).append(task)
    for source, names in lost.items():
        what = "training data" if (Path(cfg.data) / source).is_dir() else "directory"
        print(f"warning: {cfg.data} has no {source}/ {what}: stage {cfg.stage} trains without "
              f"{', '.join(names)}")


def encode_splits(cfg: TrainConfig, tasks, src: data.Sources, tok,
                  mcfg: M.ModelConfig) -> tuple[dict, dict]:
    """The train and dev examples of each task, as encoded tensors; truncations reported once."""
    warn_missing_sources(cfg, tasks, src)
    cut = Counter()

    def encode(split):
        examples = build_tasks(tasks, src.ace.get(split, []), src.swig.get(split, []),
                               src.mnre.get(split, []))
        out = {t: [tensors.encode_example(e, tok, mcfg.image_size, mcfg.max_text_len,
                                          mcfg.max_target_len) for e in exs]
               for t, exs in examples.items()}
        for encoded in out.values():
            cut.update(tensors.cuts(encoded))
        return out

    try:
        with evaluate.warnings_as_lines(sys.stdout):
            train, dev = encode("train"), encode("dev")
    except ValueError as e:  # DataError: an image that does not decode
        sys.exit(f"train.py: {e}")
    if cut["input_truncated"] or cut["target_truncated"]:
        print(f"warning: of {cut['examples']} examples, {cut['input_truncated']} prompts were cut "
              f"to max_text_len={mcfg.max_text_len} and {cut['target_truncated']} targets to "
              f"max_target_len={mcfg.max_target_len} (words past a prompt's cut cannot be "
              f"extracted; stage 1 from scratch takes --max-text-len)")
    if not train:
        sys.exit(f"train.py: {cfg.data} has no training data for the tasks of stage {cfg.stage} "
                 f"({', '.join(tasks)})")
    return train, dev


def check_batch_size(cfg: TrainConfig, train: dict, world: int) -> None:
    """Refuse a global batch (--batch-size x processes) larger than the stage's training examples
    (all tasks): it repeats examples, and can outgrow memory (100000 on 268 examples: 22.9 GB)."""
    have = sum(len(v) for v in train.values())
    if cfg.batch_size * world > have:
        sizes = ", ".join(f"{t} {len(v)}" for t, v in train.items())
        sys.exit(f"train.py: --batch-size {cfg.batch_size}"
                 f"{f' x {world} processes' if world > 1 else ''} is more than the {have} "
                 f"training examples of stage {cfg.stage}'s tasks in {cfg.data} ({sizes}): "
                 f"a batch would repeat examples; use at most {have // world}")


def make_optimizer(params: list, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases, norms and other vectors do not."""
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))


# ============================================================================= the loop
@dataclass
class Trainer:
    """One stage's training run: everything the loop's steps share."""
    cfg: TrainConfig
    env: distributed.Dist
    run: RunDir
    src: data.Sources
    net: M.Seq2Seq        # the network; ``model`` is the same one, or its DDP wrapper
    model: torch.nn.Module
    tok: tensors.Tokenizer
    tasks: tuple[str, ...]
    dev: dict             # task -> encoded dev examples
    sampler: tensors.TaskSampler
    params: list          # the trainable parameters, in the network's order (clipping)
    opt: torch.optim.AdamW
    start: int = 0        # the step the loop starts at (> 0 when resuming)
    now: int = 0          # the step being trained (0-based)
    log: object = None    # log.jsonl, appended (rank 0)
    t0: float = field(default_factory=time.time)

    @classmethod
    def set_up(cls, cfg: TrainConfig, env: distributed.Dist, run: RunDir) -> "Trainer":
        """Everything the loop needs; rank 0 takes the run directory (check_run_dir: its lock,
        which the caller releases)."""
        if env.master:  # rank 0 decides for all: torchrun stops the others if it exits
            check_run_dir(cfg, run)
        src = load_run_data(cfg, env)
        net, tok = open_network(cfg, src, run, env.master)
        net.to(env.device).train()
        model = distributed.ddp_model(net) if env.ddp else net
        tasks = tuple(cfg.tasks.split(",")) if cfg.tasks else STAGE_TASKS[cfg.stage]
        train, dev = encode_splits(cfg, tasks, src, tok, net.cfg)
        check_batch_size(cfg, train, env.world)
        # one global batch, one state
        sampler = tensors.TaskSampler(train, task_sampling_weights(train), cfg.batch_size,
                                      seed=cfg.seed, shard=(env.rank, env.world),
                                      flip_prob=cfg.flip_prob)
        params = [p for p in net.parameters() if p.requires_grad]
        self = cls(cfg, env, run, src, net, model, tok, tasks, dev, sampler, params,
                   make_optimizer(params, cfg))
        if cfg.resume:
            try:
                self.resume()
            except tensors.SamplerStateError as e:  # an explicit --seed or --data not the run's
                sys.exit(f"train.py: --resume: {e} (the run's vs now); a resume needs the run's "
                         f"own data and seed (leave --data and --seed out to take {run}'s)")
        print(f"stage {cfg.stage}: tasks {', '.join(f'{t} ({len(v)})' for t, v in train.items())}; "
              f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters; "
              f"device {env.device}" + (f" x {env.world} processes" if env.ddp else ""))
        if cfg.lora_rank:
            lora.print_trainable_parameters(net)
        self.log = open(run / RunDir.LOG, "a") if env.master else open(os.devnull, "w")
        if cfg.resume:  # lines after this one replace those of the interrupted run past `start`
            self.log.write(json.dumps({"step": self.start, "resumed": True}) + "\n")
        return self

    def resume(self) -> None:
        try:
            self.start = self.run.load_train_state(self.opt, self.sampler)
        except CheckpointError as e:
            sys.exit(f"train.py: --resume: {e}")
        now = asdict(self.cfg)
        changed = {k: (v, now.get(k)) for k, v in self.run.info()["config"].items()
                   if k != "resume" and now.get(k) != v}
        if changed:
            print("note: resuming with other settings than the checkpoint's (not the run it "
                  "would have been): " + ", ".join(f"{k} {a} -> {b}"
                                                  for k, (a, b) in changed.items()))
        print(f"resuming {self.run} at step {self.start} of {self.cfg.max_steps}")

    def step(self, step: int) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """One optimizer step over ``grad_accum`` micro-batches -> (loss, per-task losses,
        gradient norm)."""
        cfg, env = self.cfg, self.env
        for group in self.opt.param_groups:
            group["lr"] = get_lr(step, cfg)
        autocast = torch.autocast(env.device.type, torch.bfloat16,
                                  enabled=env.device.type == "cuda")
        # the step's loss: the mean over its micro-batches (their per-task parts: the last one's)
        loss = 0.0
        for micro in range(cfg.grad_accum):
            # under DDP, gradients are all-reduced once per step: at the last micro-batch's backward
            sync = not (env.ddp and micro + 1 < cfg.grad_accum)
            with nullcontext() if sync else self.model.no_sync():
                with autocast:  # under DDP: world x this rank's part of the global batch's loss
                    part, parts = multitask_loss(
                        *M.example_losses(self.model, next(self.sampler), env.device),
                        all_reduce=dist.all_reduce if env.ddp else None, world_size=env.world)
                # the step's gradient: the mean over its micro-batches
                (part / cfg.grad_accum).backward()
            loss = loss + part.detach() / cfg.grad_accum
        # log the global loss: the ranks' parts add up to it (each part here is world x its part)
        if env.ddp:
            distributed.average_tower_grads(self.net, env.world)
            dist.all_reduce(loss)
            loss = loss / env.world
        # the norm before clipping, logged; --grad-clip 0 means no clipping (inf: a factor of 1)
        norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip or math.inf)
        # checked before the update, so the weights stay finite
        if not torch.isfinite(loss.detach() + norm):
            sys.exit(f"train.py: step {step + 1}: non-finite loss {loss.item()} or gradient norm "
                     f"{norm.item()}; stopped without updating or saving ({self.run.kept()}). A "
                     f"lower --lr (now {cfg.lr}) or --grad-clip may help")
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss, parts, norm

    def log_line(self, step: int, loss, parts: dict, norm) -> dict:
        """One aligned line on the terminal and one JSON line in the log."""
        lr = get_lr(step, self.cfg)
        record = {"step": step + 1, "loss": round(loss.item(), 4), "lr": lr,
                  "grad_norm": round(norm.item(), 3),
                  "tasks": {t: round(v, 4) for t, v in parts.items()},
                  "elapsed_s": round(time.time() - self.t0, 1)}
        tqdm.write(f"step {step + 1:5d} | loss {loss.item():.4f} | lr {lr:.2e} | "
                   f"norm {norm.item():6.3f} | {record['elapsed_s']:7.1f}s")
        self.write(record)
        return record

    def evaluate_and_save(self, step: int) -> dict:
        """Dev loss per task and the quick dev score, logged; then the checkpoint of this step."""
        cfg, record = self.cfg, {"step": step + 1}
        if cfg.eval_batches:  # 0: no dev loss (none logged: a 0.000 would read as a perfect fit)
            record["dev_loss"] = M.dev_loss(self.net, self.dev, cfg.eval_batches,
                                            cfg.batch_size * self.env.world, self.env.device)
        record["dev_f1"] = rmpl.quick_score(self.net, self.tok, self.tasks,
                                            self.src.m2e2.get("dev"), cfg.dev_docs)
        losses = " ".join(f"{t} {v:.3f}" for t, v in record.get("dev_loss", {}).items())
        tqdm.write(f"eval {step + 1:5d} | dev loss {losses if cfg.eval_batches else 'off'}"
                   + " | dev F1 " + " ".join(f"{t} {v:.1f}" for t, v in record["dev_f1"].items()))
        self.write(record)
        info = {"stage": cfg.stage, "tasks": list(self.tasks), "step": step + 1,
                "config": asdict(cfg)}
        try:
            self.run.save_checkpoint(self.net, self.opt, self.sampler, info)
            if cfg.keep_best:
                self.keep_if_best(info, record["dev_f1"])
        except CheckpointError as e:  # non-finite weights (--lr inf), or a full disk
            sys.exit(f"train.py: {e}")
        return record

    def keep_if_best(self, info: dict, dev_f1: dict) -> None:
        """--keep-best CELL: this step's weights go to OUT/stagek/best when its quick dev F1 of
        CELL beats every earlier evaluation's (a tie keeps the earlier, smaller step). The best so
        far is read back from best/rmpl.json, so a resumed run goes on comparing with it."""
        cell, best = self.cfg.keep_best, self.run.best()
        if best.holds_run() and dev_f1[cell] <= best.info()["dev_f1"][cell]:
            return
        self.run.save_best(self.net, self.tok, {**info, "dev_f1": dev_f1})
        tqdm.write(f"best  {info['step']:5d} | dev F1 {cell} {dev_f1[cell]:.1f} -> {best}")

    def train(self) -> dict:
        """The loop: steps start .. max_steps - 1, logged, evaluated and saved on schedule."""
        cfg, record = self.cfg, {}
        if self.start >= cfg.max_steps:
            print(f"stage {cfg.stage} is already done: {self.run} (raise --max-steps to train on)")
        with tqdm(range(self.start, cfg.max_steps), initial=self.start, total=cfg.max_steps,
                  disable=None if self.env.master else True, desc=f"stage {cfg.stage}") as bar:
            for step in bar:
                self.now = step
                loss, parts, norm = self.step(step)
                last = step + 1 == cfg.max_steps
                if (step + 1) % cfg.log_every == 0 or last:
                    record = self.log_line(step, loss, parts, norm)
                if self.env.master and ((step + 1) % cfg.eval_every == 0 or last):  # others wait
                    record = self.evaluate_and_save(step)
        self.log.close()
        if self.start < cfg.max_steps:
            since = f" (from step {self.start})" if self.start else ""
            print(f"stage {cfg.stage} done in {time.time() - self.t0:.0f}s{since}: {self.run}")
        return record

    def write(self, record: dict) -> None:
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()


def main(argv=None) -> dict:
    cfg = parse_args(argv)
    # progress shows line by line in a pipe or a log file too
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    # the same on every rank: the same initial weights (DDP also broadcasts rank 0's)
    set_seed(cfg.seed)
    try:
        env = distributed.setup(cfg.device)
    except ValueError as e:  # a device this machine lacks: before any work
        sys.exit(f"train.py: --device: {e}")
    run = RunDir(Path(cfg.out) / f"stage{cfg.stage}")
    trainer = None
    try:
        trainer = Trainer.set_up(cfg, env, run)
        record = trainer.train()
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback; 130: killed by SIGINT
        if env.master:
            where = f"at step {trainer.now + 1}" if trainer else "while setting up"
            print(f"train.py: interrupted {where}; {run.kept()}", file=sys.stderr)
        sys.exit(130)
    finally:  # however the run ends (Ctrl-C, an error), its directory is free for the next
        run.unlock()
    distributed.teardown(env)
    return record


if __name__ == "__main__":
    evaluate.run_command(main)
