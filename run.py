"""A run directory: the files one training stage writes, and how they are read back.

``{out}/stage{k}/`` holds

    model.safetensors   base weights with their ModelConfig        (save_model / load_model)
    adapter.safetensors LoRA tensors and the hash of their base     (save_adapter / load_adapter)
    tokenizer.model     the sentencepiece model                     (tensors.Tokenizer)
    rmpl.json           stage, tasks, step and the training config of the checkpoint
    train_state.pt      optimizer moments, sampler position, RNG states, step, the weights' sha256
    log.jsonl           one JSON line per log interval and per evaluation, appended
    .lock               flock-ed by the one train.py that writes the run (RunDir.lock)
    best/               --keep-best: the best evaluation's weights, tokenizer, rmpl.json (save_best)

``RunDir`` owns these names. A directory holds a run once it holds a checkpoint: one stopped
before its first (Ctrl-C, a full disk, a diverged loss) can simply be started again. One
train.py at a time writes a run (RunDir.lock). A checkpoint (weights, rmpl.json, train_state.pt)
is written as one unit that a kill cannot tear: its files are staged in ``.pending/``, committed
by an empty COMMITTED file, then moved in; whatever a kill interrupts, the next start finds the
previous checkpoint or the new one, whole. Every file is written atomically (temp file, fsync,
rename).

Weights are safetensors files that carry their ``ModelConfig`` (and ``schema.SCHEMA_VERSION``) as
JSON metadata, so ``load_model(path)`` rebuilds the network from its own file; an adapter file
carries its LoRA config and the hash of the base it belongs to.

What this file does not do: define the network (model.py) or LoRA (lora.py), decide when to save
(train.py).
"""
from __future__ import annotations

import errno
import hashlib
try:
    import fcntl  # POSIX; elsewhere (Windows) a run directory is not locked, with a warning
except ImportError:
    fcntl = None
import io
import json
import os
import pickle
import random
import shutil
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

import schema
import tensors
from lora import add_lora, lora_layers, lora_state_dict, mark_only_lora_as_trainable, remove_lora
from model import ModelConfig, Seq2Seq


# ============================================================================= weights files
class CheckpointError(ValueError):
    """A run directory or a weights file that does not fit: unreadable, wrong kind,
    missing/unexpected keys, other base, another run's tokenizer, busy, not writable."""


def write_atomic(path, data: bytes) -> None:
    """Write a temp file in the same directory, fsync, rename, fsync the directory: a crash (or a
    power cut) leaves the old file or the new one, never a torn one. A killed writer may leave a
    ``.tmp-*`` file behind. The file gets the mode a plain ``open()`` gives (0o666 less the
    umask), like the run's other files (tempfile.mkstemp's would be owner-only)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_dir(folder)  # the rename itself is durable only once the directory is synced


def fsync_dir(folder) -> None:
    """Make the renames and deletions in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _readable(path, read):
    """``read()`` a safetensors file; a file cut short (a copy interrupted, a full disk) is a
    CheckpointError that names it."""
    try:
        return read()
    except SafetensorError as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}): cut short or "
                              f"not written by this code; put back a whole copy") from None


def _read_metadata(path, kind: str) -> dict[str, str]:
    def read():
        with safe_open(os.fspath(path), framework="pt") as f:
            return f.metadata() or {}
    meta = _readable(path, read)
    if meta.get("format") != kind:
        raise CheckpointError(f"{path}: not an {kind} file "
                              f"(metadata format={meta.get('format')!r})")
    if meta.get("schema_version") != schema.SCHEMA_VERSION:
        raise CheckpointError(f"{path}: written for schema version "
                              f"{meta.get('schema_version')!r}, this code has "
                              f"{schema.SCHEMA_VERSION!r} (the token ids would mean other things)")
    return meta


def _base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base weights, contiguous: no LoRA tensors, no tied head
    (safetensors refuses shared memory)."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()
            if "lora_" not in k and k != "head.weight"}


def _check_keys(path, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    missing = _by_module(set(expected) - set(got), expected)
    unexpected = _by_module(set(got) - set(expected), got)
    shapes = [f"{k}: file {tuple(got[k].shape)}, model {tuple(expected[k].shape)}"
              for k in sorted(set(got) & set(expected)) if got[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{path}: missing keys {missing}; unexpected keys {unexpected}; "
                              f"wrong shapes {shapes}")


def _by_module(keys: set[str], state: dict) -> list[str]:
    """Sorted keys, where every key of a top-level module is among them named once as
    ``module.* (the whole module, N keys)``: a file from before a module existed (another version of
    the network) names one thing, not dozens."""
    top = lambda k: k.split(".")[0]
    out = []
    for module in sorted({top(k) for k in keys}):
        mine = sorted(k for k in keys if top(k) == module)
        whole = len(mine) > 1 and len(mine) == sum(top(k) == module for k in state)
        out += [f"{module}.* (the whole module, {len(mine)} keys)"] if whole else mine
    return out


def weights_hash(model: nn.Module) -> str:
    """A short sha256 of the base weights (names and bytes):
    ties an adapter to the base it was trained on."""
    h = hashlib.sha256()
    for k, v in sorted(_base_state(model).items()):
        h.update(k.encode())
        h.update(v.cpu().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def save_model(model: Seq2Seq, path) -> None:
    """Save the base weights and the config.

    LoRA layers must be merged (their update is then in the weights).
    """
    if any(not m.merged for m in lora_layers(model).values()):
        raise CheckpointError(f"{path}: the model has unmerged LoRA layers; "
                              f"merge_lora(model) bakes them into the base weights, "
                              f"save_adapter(...) saves them apart")
    meta = {"format": "rmpl-mini/model", "schema_version": schema.SCHEMA_VERSION,
            "config": json.dumps(asdict(model.cfg))}
    write_atomic(path, save({k: v.cpu() for k, v in _base_state(model).items()}, metadata=meta))


def load_model(path, device="cpu") -> Seq2Seq:
    """Rebuild a Seq2Seq from the file's own config and load its weights;
    refuses missing/unexpected keys."""
    cfg = model_config(path, json.loads(_read_metadata(path, "rmpl-mini/model")["config"]))
    model = Seq2Seq(cfg).to(device)
    state = _readable(path, lambda: load_file(os.fspath(path), device=str(device)))
    _check_keys(path, _base_state(model), state)
    # strict would ask for head.weight, which is tok_emb.weight
    model.load_state_dict(state, strict=False)
    return model


def save_adapter(model: nn.Module, path, base_ref: str) -> None:
    """Save only the LoRA tensors, their config, and the base they belong to
    (``base_ref`` + weights hash)."""
    layers = lora_layers(model)
    if not layers:
        raise CheckpointError(f"{path}: the model has no LoRA layers to save")
    # merged weights are not the base any more: the hash would lie
    if any(m.merged for m in layers.values()):
        raise CheckpointError(f"{path}: unmerge_lora(model) before save_adapter")
    first = next(iter(layers.values()))
    lora_config = {"r": first.r, "lora_alpha": first.lora_alpha,
                   "lora_dropout": first.lora_dropout.p,
                   "targets": sorted(layers)}  # full module names: load_adapter wraps exactly these
    meta = {"format": "rmpl-mini/adapter", "schema_version": schema.SCHEMA_VERSION,
            "base_ref": base_ref, "base_hash": weights_hash(model),
            "lora_config": json.dumps(lora_config)}
    write_atomic(path, save({k: v.cpu().contiguous() for k, v in lora_state_dict(model).items()},
                            metadata=meta))


def load_adapter(model: nn.Module, path, check_base: bool = True) -> nn.Module:
    """Add LoRA layers to a plain model as the file says, and load them. Refuses an adapter
    trained on other base weights unless ``check_base=False`` (for API users who know better; the
    commands always check). Returns the model."""
    meta = _read_metadata(path, "rmpl-mini/adapter")
    if check_base and weights_hash(model) != meta["base_hash"]:
        raise CheckpointError(f"{path}: this adapter was trained on another base "
                              f"({meta['base_ref']}, weights hash {meta['base_hash']}) than the "
                              f"weights it is loaded onto (hash {weights_hash(model)}): put back "
                              f"that base's model.safetensors beside it, or start the stage again")
    c = json.loads(meta["lora_config"])
    add_lora(model, c["targets"], c["r"], c["lora_alpha"], c["lora_dropout"])
    try:
        device = str(next(model.parameters()).device)
        state = _readable(path, lambda: load_file(os.fspath(path), device=device))
        _check_keys(path, lora_state_dict(model), state)
    except BaseException:  # leave the model as it came
        remove_lora(model)
        raise
    model.load_state_dict(state, strict=False)
    return model


def model_config(path, values: dict) -> ModelConfig:
    """The ModelConfig a weights file was saved with; fields this code does not know are an error
    that names them (a file of another version), not a TypeError."""
    unknown = sorted(set(values) - {f.name for f in fields(ModelConfig)})
    if unknown:
        raise CheckpointError(f"{path}: its config has fields this code does not know "
                              f"({', '.join(unknown)}): written by another version of model.py")
    return ModelConfig(**values)


# ============================================================================= the run directory
class RunDir:
    """One training stage's directory (module docstring): its files, its checkpoints, and the
    network and tokenizer it holds."""
    MODEL = "model.safetensors"
    ADAPTER = "adapter.safetensors"
    TOKENIZER = "tokenizer.model"
    INFO = "rmpl.json"
    STATE = "train_state.pt"
    LOG = "log.jsonl"
    PENDING = ".pending"  # a checkpoint being written; "COMMITTED" inside it marks it whole
    LOCK = ".lock"
    BEST = "best"  # a run directory of its own: the weights of the best evaluation (--keep-best)

    def __init__(self, path):
        self.path = Path(path)
        self._lock_fd = None  # the open .lock file while this process holds the run

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def holds_run(self) -> bool:
        """A checkpoint was written here (rmpl.json comes only with one; settle a cut-off write
        with finish_checkpoint first). A run stopped before its first may be started again."""
        return (self / self.INFO).exists()

    def kept(self) -> str:
        """What a stopped run leaves to go on from, for the message that stops it."""
        if not self.holds_run():
            return f"{self} has no checkpoint yet: the same command without --resume starts again"
        return (f"the checkpoint of step {self.info()['step']} in {self} is intact: --resume "
                f"continues from it")

    # ------------------------------------------------------------------------- one writer
    def take(self, resume: bool) -> None:
        """Before a stage starts or resumes here: make this process the run's writer (lock),
        settle a checkpoint write a kill cut off, then check that there is a whole checkpoint to
        resume, or none that a fresh start would overwrite. A run stopped before its first
        checkpoint holds none: it may be started again. Resuming nothing creates nothing."""
        def nothing_to_resume(name):
            return CheckpointError(f"--resume: no {name} in {self} (no checkpoint to resume; "
                                   f"drop --resume to start)")
        if resume and not self.path.is_dir():
            raise nothing_to_resume(self.STATE)
        if not self.lock():
            warnings.warn(f"{self}: cannot be locked (no flock on this system or filesystem), so "
                          f"nothing stops a second train.py from writing here")
        self.finish_checkpoint()
        if resume:
            lora = self.holds_run() and bool(self.info()["config"].get("lora_rank"))
            for name in [self.STATE, self.INFO, self.TOKENIZER, self.MODEL] + [self.ADAPTER] * lora:
                if not (self / name).is_file():
                    raise nothing_to_resume(name)
        elif self.holds_run():
            raise CheckpointError(f"{self} already holds a run; --resume continues it, --out DIR "
                                  f"starts a new one elsewhere (or delete {self} to start it "
                                  f"again)")
        elif (self / self.LOG).exists():  # its lines would mix with the new run's
            (self / self.LOG).unlink()
            warnings.warn(f"{self} held a run stopped before its first checkpoint: starting it "
                          f"again (its {self.LOG} deleted)")

    def lock(self) -> bool:
        """Make this process the run's one writer, creating the directory: an exclusive
        ``flock`` on ``.lock``, held until unlock() or the process ends. The kernel drops it when
        the process dies, however it dies, so a crash or a kill leaves nothing stuck. It is
        advisory (it stops another train.py, not other programs) and reliable on local
        filesystems only: over a network filesystem two machines may not see each other's lock.
        Returns False, unlocked, where the filesystem cannot lock at all."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self / self.LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise CheckpointError(f"{self}: cannot create the run there ({e.strerror or e}): "
                                  f"--out must be a directory this user can write") from None
        if fcntl is None:
            os.close(fd)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                return False  # ENOLCK, EOPNOTSUPP...: a filesystem without locks
            pid = (self / self.LOCK).read_text().strip()
            raise CheckpointError(f"{self}: another train.py is using this run directory"
                                  f"{f' (pid {pid})' if pid else ''}; wait for it to end, or "
                                  f"pass --out DIR") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for the message above; the lock is the flock
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the file releases the flock
            self._lock_fd = None

    def has_model(self) -> bool:
        return (self / self.MODEL).is_file()

    def info(self) -> dict:
        """rmpl.json: {"stage", "tasks", "step", "config"} of the last checkpoint."""
        return json.loads((self / self.INFO).read_text())

    # ------------------------------------------------------------------------- opening
    def tokenizer(self) -> tensors.Tokenizer:
        return tensors.Tokenizer.load(self / self.TOKENIZER)

    def open(self, device="cpu", lora: str = "merged") -> tuple[Seq2Seq, tensors.Tokenizer]:
        """The network and its tokenizer, checked against each other: the base weights, with the
        adapter beside them if there is one. ``lora="merged"`` bakes it into plain weights
        (inference, or a new stage starting from this one); ``"trainable"`` keeps the LoRA layers
        and makes only them trainable (resuming a LoRA run; load_adapter checks that the base is
        the one they were trained on). A tokenizer of another size than the network's vocabulary
        comes from another run: its ids would mean other pieces (or index past the embedding)."""
        for name in (self.MODEL, self.TOKENIZER):
            if not (self / name).is_file():
                raise CheckpointError(f"{self}: no {name} here")
        tok, net = self.tokenizer(), load_model(self / self.MODEL, device)
        if tok.vocab_size != net.cfg.vocab_size:
            raise CheckpointError(
                f"{self / self.TOKENIZER} has {tok.vocab_size} pieces but {self / self.MODEL} "
                f"was trained with a vocabulary of {net.cfg.vocab_size}: the tokenizer comes from "
                f"another run; put back the one trained with this model")
        if (self / self.ADAPTER).exists():
            load_adapter(net, self / self.ADAPTER)
            if lora == "merged":
                remove_lora(net, merge=True)
            else:
                mark_only_lora_as_trainable(net)
        return net, tok

    def save_tokenizer(self, tok: tensors.Tokenizer) -> None:
        tok.save(self / self.TOKENIZER)

    def save_base(self, net: Seq2Seq) -> None:
        """The base a LoRA run's adapters belong to, copied in so the run stands on its own."""
        save_model(net, self / self.MODEL)

    # ------------------------------------------------------------------------- checkpoints
    def _weights_file(self, lora: bool) -> Path:
        return self / (self.ADAPTER if lora else self.MODEL)

    def save_checkpoint(self, net, opt, sampler, info: dict) -> None:
        """The weights, rmpl.json (``info``: stage, tasks, step, config) and train_state.pt of one
        step, as one unit that a kill cannot tear. They are written into ``.pending/`` (each
        atomically), then the empty file COMMITTED is written there, then they are moved into the
        run (finish_checkpoint). A kill before COMMITTED leaves the previous checkpoint untouched;
        a kill after it leaves a whole checkpoint that finish_checkpoint moves in. Non-finite
        weights are refused before anything is written, so a diverged run never replaces a good
        checkpoint. A network with LoRA layers saves only its adapter. A write that fails (a full
        disk) is a CheckpointError; the previous checkpoint is untouched."""
        check_finite(net, f"{self}: step {info['step']}", self.kept())
        self.finish_checkpoint()  # one a kill interrupted; then .pending/ is free
        try:
            self._write_pending(net, opt, sampler, info)
        except OSError as e:  # nothing was moved into the run yet: dropping .pending/ is safe
            shutil.rmtree(self / self.PENDING, ignore_errors=True)
            raise CheckpointError(f"{self}: the checkpoint of step {info['step']} was not written "
                                  f"({e.strerror or e}); {self.kept()}") from None
        self.finish_checkpoint()

    def _save_weights(self, net, folder: Path) -> Path:
        """The trainable weights into ``folder``: an adapter (of this run's base), or the model."""
        lora = bool(lora_layers(net))
        weights = folder / self._weights_file(lora).name
        if lora:
            save_adapter(net, weights, base_ref=str(self / self.MODEL))
        else:
            save_model(net, weights)
        return weights

    def _write_pending(self, net, opt, sampler, info: dict) -> None:
        pending = self / self.PENDING
        pending.mkdir()
        weights = self._save_weights(net, pending)
        write_atomic(pending / self.INFO, json.dumps(info, indent=1).encode())
        state = {"step": info["step"], "weights_sha256": _sha256(weights),
                 "optimizer": opt.state_dict(), "sampler": sampler.state_dict(),
                 "rng": rng_states()}
        buf = io.BytesIO()
        torch.save(state, buf)
        write_atomic(pending / self.STATE, buf.getvalue())
        write_atomic(pending / "COMMITTED", b"")  # the commit point

    def best(self) -> "RunDir":
        return RunDir(self / self.BEST)

    def save_best(self, net, tok: tensors.Tokenizer, info: dict) -> None:
        """The network and tokenizer as the run ``best/`` (a LoRA run's adapter with a copy of its
        base), which --init and rmpl.py open like any run; no train state: it is not resumed.
        rmpl.json goes first and comes back last, so a write cut off leaves no best (the next
        evaluation writes one) rather than files of two steps."""
        best = self.best()
        check_finite(net, f"{best}: step {info['step']}", self.kept())
        try:
            best.path.mkdir(exist_ok=True)
            (best / self.INFO).unlink(missing_ok=True)
            if lora_layers(net):
                shutil.copyfile(self / self.MODEL, best / self.MODEL)
            self._save_weights(net, best.path)
            best.save_tokenizer(tok)
            write_atomic(best / self.INFO, json.dumps(info, indent=1).encode())
        except OSError as e:
            raise CheckpointError(f"{best}: the weights of step {info['step']} were not kept "
                                  f"({e.strerror or e})") from None

    def finish_checkpoint(self) -> None:
        """Settle a checkpoint write that a kill may have interrupted: a committed ``.pending/``
        is moved into the run (file by file; a kill here is settled by the next call), an
        uncommitted one is deleted. Afterwards the run's files are one whole checkpoint: the new
        one or the previous one."""
        pending = self / self.PENDING
        if not pending.is_dir():
            return
        committed = (pending / "COMMITTED").exists()
        # COMMITTED stays to the end, so a kill in this loop is settled the same way
        for f in list(pending.iterdir()):
            if f.name == "COMMITTED":
                continue
            if committed:
                os.replace(f, self / f.name)
            else:
                f.unlink()  # the pending files, and temp files of a write that was cut off
        fsync_dir(self.path)
        (pending / "COMMITTED").unlink(missing_ok=True)
        pending.rmdir()
        fsync_dir(self.path)

    def load_train_state(self, opt, sampler) -> int:
        """Restore the optimizer moments, the sampler's position and every RNG; return the step.
        The weights are in the network already (RunDir.open). ``weights_only=True`` unpickles
        tensors and plain containers only, so a tampered train_state.pt cannot run code; it is
        refused with a CheckpointError, as is a state that does not belong with the weights
        beside it (files copied from different checkpoints by hand: a kill cannot do it)."""
        state = self._read_state()
        info = self.info()
        weights = self._weights_file(bool(info["config"].get("lora_rank")))
        if state["weights_sha256"] != _sha256(weights) or info["step"] != state["step"]:
            raise CheckpointError(
                f"{self}: {self.STATE} (step {state['step']}) does not belong with "
                f"{weights.name} and {self.INFO} (step {info['step']}): the files come from "
                f"different checkpoints. The optimizer state of these weights is missing, so an "
                f"exact resume is impossible; put back the matching files or start the stage "
                f"again")
        opt.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        set_rng_states(state["rng"])
        return state["step"]

    def _read_state(self) -> dict:
        path = self / self.STATE
        try:
            state = torch.load(path, weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(f"{path}: refused: it holds pickled objects other than tensors "
                                  f"and plain containers (loading them could run code; train.py "
                                  f"never writes any). torch: {str(e).splitlines()[0]}")
        except (RuntimeError, EOFError) as e:
            raise CheckpointError(f"{path}: not a readable train state ({e})")
        if not {"weights_sha256", "rng"} <= set(state):
            raise CheckpointError(f"{path}: written by an older train.py (no weights hash or RNG "
                                  f"states); it cannot be resumed exactly")
        return state


def check_finite(net: nn.Module, where: str, kept: str) -> None:
    """Refuse non-finite weights (one fused pass; the names on failure); ``kept`` says what the
    run still has."""
    if torch.isfinite(torch.nn.utils.get_total_norm(list(net.parameters()))):
        return
    bad = ([n for n, p in net.named_parameters() if not torch.isfinite(p).all()]
           or ["(their norm overflows)"])
    raise CheckpointError(f"{where}: non-finite weights in {', '.join(bad[:3])}"
                          f"{' ...' if len(bad) > 3 else ''}; checkpoint not written; {kept}")


def rng_states() -> dict:
    """Every RNG's state. numpy's ("MT19937", uint32 keys, pos, has_gauss, gauss) keeps its keys
    as a list, so that torch.load(weights_only=True) reads it back."""
    np_rng = np.random.get_state()
    return {"python": random.getstate(), "numpy": (np_rng[0], np_rng[1].tolist(), *np_rng[2:]),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(rng: dict) -> None:
    random.setstate(rng["python"])
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32),
                         *rng["numpy"][2:]))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
