"""LoRA written by hand, with the names of PEFT and loralib (Hu et al., 2021, "LoRA: Low-Rank
Adaptation of Large Language Models").

    y = x W^T + b + (dropout(x) A^T B^T) * lora_alpha / r        A (r, in), B (out, r)

``add_lora`` wraps chosen nn.Linear layers of any model in ``LoRALinear`` (A Kaiming-uniform, B
zeros: a fresh adapter changes nothing); ``mark_only_lora_as_trainable`` freezes the rest;
``lora_state_dict`` is what an adapter file holds. Merging is explicit and idempotent
(``merge_lora`` / ``unmerge_lora``), never a side effect of ``eval()``.

What this file does not do: know the network (model.py, train.py apply it) or write files
(model.save_adapter).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# every attention projection: vision, encoder, decoder self and cross
DEFAULT_LORA_TARGETS = ("q", "k", "v", "o")


class LoRALinear(nn.Module):
    """y = x W^T + b + (dropout(x) A^T B^T) * lora_alpha / r,
    with W, b frozen in practice and A, B trained.

    The wrapped layer's ``weight`` and ``bias`` become this module's own, so a checkpoint key
    such as ``...attn.q.weight`` keeps its name and a base checkpoint loads into a model with
    or without LoRA.
    """

    def __init__(self, base: nn.Linear, r: int, lora_alpha: float, lora_dropout: float):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank r must be positive, got {r}")
        self.weight, self.bias = base.weight, base.bias
        self.r, self.lora_alpha, self.scaling = r, lora_alpha, lora_alpha / r
        self.lora_A = nn.Parameter(base.weight.new_empty(r, base.in_features))   # (r, in)
        # (out, r): a fresh adapter is a no-op
        self.lora_B = nn.Parameter(base.weight.new_zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init
        self.lora_dropout = nn.Dropout(lora_dropout)
        self.merged = False

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.merged:  # the update already lives in weight
            return y
        return y + (self.lora_dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def merge(self):
        """Add B A * scaling into weight (for fast inference). Idempotent."""
        if not self.merged:
            self.weight += (self.lora_B @ self.lora_A) * self.scaling
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        """Subtract it again (exact up to float rounding). Idempotent."""
        if self.merged:
            self.weight -= (self.lora_B @ self.lora_A) * self.scaling
            self.merged = False


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def add_lora(model: nn.Module, targets=DEFAULT_LORA_TARGETS, r: int = 8, lora_alpha: float = 16,
             lora_dropout: float = 0.05) -> nn.Module:
    """Wrap every nn.Linear whose module name ends with one of ``targets`` ('q' matches
    '...attn.q'; a full name matches itself) in a LoRALinear, in place. Returns the model."""
    if lora_layers(model):
        raise ValueError("add_lora: the model already has LoRA layers")
    found = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)
             and any(name == t or name.endswith("." + t) for t in targets)]
    if not found:
        raise ValueError(f"add_lora: no nn.Linear module name ends with any of {tuple(targets)}")
    for name in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, lora_alpha, lora_dropout))
    return model


def remove_lora(model: nn.Module, merge: bool = False) -> nn.Module:
    """Undo add_lora: every LoRALinear becomes an nn.Linear holding its base weight and bias
    again, or, with ``merge=True``, the weight with the LoRA update baked in (an adapted model
    made plain)."""
    for name, m in lora_layers(model).items():
        if merge:
            m.merge()
        else:
            m.unmerge()
        parent, _, child = name.rpartition(".")
        plain = nn.Linear(m.weight.shape[1], m.weight.shape[0], bias=m.bias is not None,
                          device="meta")
        plain.weight, plain.bias = m.weight, m.bias
        setattr(model.get_submodule(parent), child, plain)
    return model


def mark_only_lora_as_trainable(model: nn.Module) -> None:
    """Freeze everything but the LoRA tensors: the base's parameters, and also its BatchNorm
    statistics, which training would otherwise keep updating (they still normalise with the batch's
    statistics in train mode). A frozen base then stays bit-identical to the file it came from, as
    an adapter's base hash requires."""
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}


def merge_lora(model: nn.Module) -> None:
    for m in lora_layers(model).values():
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    for m in lora_layers(model).values():
        m.unmerge()


def trainable_parameters(model: nn.Module) -> str:
    """The PEFT line: 'trainable params: 1,234 || all params: 5,678 || trainable%: 21.7300'
    (tied weights once)."""
    params = list(model.parameters())  # parameters() yields a shared (tied) tensor once
    trainable, total = (sum(p.numel() for p in params if p.requires_grad),
                        sum(p.numel() for p in params))
    return (f"trainable params: {trainable:,} || all params: {total:,} || "
            f"trainable%: {100 * trainable / total:.4f}")


def print_trainable_parameters(model: nn.Module) -> None:
    print(trainable_parameters(model))
