"""Processes: one per device under torchrun, and the DDP wrapper around the network.

``torchrun --nproc_per_node N train.py ...`` starts N processes; each finds its rank here
(``setup``), wraps the network (``ddp_model``), and meets the others at the all-reduces of the
loss (tasks.multitask_loss) and of the gradients. Only rank 0 prints, evaluates and writes files.

The vision tower, the grounding head and the trigger tagger are left out of DDP's own gradient
averaging: a process whose slice of the batch holds no image (no relation question with a picture,
no tagged sentence) never runs the tower (the head, the tagger), and DDP would then need
``find_unused_parameters`` (a graph traversal every step, and a warning whenever nothing was left
out). ``average_tower_grads`` averages their gradients by hand instead, exactly as DDP would.

What this file does not do: sample the global batch (tensors.TaskSampler gives each rank its
slice), or decide when to synchronise (train.py).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

import model as M


@dataclass
class Dist:
    """Where this process runs: its device and, under torchrun, its rank of ``world``."""
    device: torch.device
    rank: int = 0
    world: int = 1
    ddp: bool = False

    @property
    def master(self) -> bool:  # rank 0 prints, evaluates, and writes the log and the checkpoints
        return self.rank == 0


def setup(device: str) -> Dist:
    """One process per device under torchrun (nccl on CUDA, gloo on CPU), else a plain one.
    ``device``: as model.pick_device takes it (a ValueError, before any work, if this machine
    lacks it)."""
    env = Dist(M.pick_device(device))
    if int(os.environ.get("RANK", -1)) == -1:
        return env
    dist.init_process_group(backend="nccl" if env.device.type == "cuda" else "gloo")
    env.rank, env.world, env.ddp = dist.get_rank(), dist.get_world_size(), True
    if env.device.type == "cuda":
        env.device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}")
        torch.cuda.set_device(env.device)
    if not env.master:
        sys.stdout = open(os.devnull, "w")  # one copy of every message; errors (stderr) still show
    return env


# the modules a slice of the batch may leave out (the tagger where the network has one)
HAND_AVERAGED = ("vision", "grounding", "tagger")


def hand_averaged(net: M.Seq2Seq) -> list[str]:
    return [name for name in HAND_AVERAGED if hasattr(net, name)]


def ddp_model(net: M.Seq2Seq) -> torch.nn.parallel.DistributedDataParallel:
    """DDP over the network but its vision tower, grounding head and tagger, which a slice without
    images (tagged sentences) leaves out of the graph (find_unused_parameters would traverse the
    graph every step, and warn whenever nothing was left out): average_tower_grads averages their
    gradients. Their buffers
    (BatchNorm's statistics, the head's count of grounding targets) stay per process: processes
    make different numbers of forwards (text, image sub-batch); average_tower_grads unites the
    head's known name pieces."""
    DDP = torch.nn.parallel.DistributedDataParallel
    ignored = [f"{name}.{n}" for name in hand_averaged(net)
               for n, _ in (*net.get_submodule(name).named_parameters(),
                            *net.get_submodule(name).named_buffers())]
    DDP._set_params_and_buffers_to_ignore_for_model(net, ignored)
    return DDP(net)


def average_tower_grads(net: M.Seq2Seq, world: int) -> None:
    """The vision tower's, the grounding head's and the tagger's gradients averaged over the
    processes as DDP averages the others: a process whose slices did not use a module adds zeros;
    if none did, they stay None, as in one process (AdamW then leaves it alone). The head's record
    of the name pieces it was trained on becomes the union of the processes' (rank 0 saves it)."""
    for name in hand_averaged(net):
        _average(net.get_submodule(name), world)
    dist.all_reduce(net.grounding.known, op=dist.ReduceOp.MAX)


def _average(module: torch.nn.Module, world: int) -> None:
    params = [p for p in module.parameters() if p.requires_grad]  # none under LoRA
    if params:
        used = torch.tensor(float(params[0].grad is not None), device=params[0].device)
        dist.all_reduce(used)  # the module is in a process's graph whole or not at all
    if params and used.item():
        flat = torch.cat([p.grad.flatten() if p.grad is not None else p.new_zeros(p.numel())
                          for p in params]) / world
        dist.all_reduce(flat)
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad = g.view_as(p)


def teardown(env: Dist) -> None:
    """Rank 0 may still be saving the last checkpoint: a rank that tore its process group down
    meanwhile was seen to abort at exit (gloo, "terminate called without an active exception")."""
    if env.ddp:
        dist.barrier()
        dist.destroy_process_group()
