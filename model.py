"""The model: a small vision-language encoder-decoder, and its safetensors files.

  images (B, 3, S, S) -> CNN -> patch tokens (B, N, d) --+
                                                          +-> encoder -> memory (B, T + N, d)
  input_ids (B, T)    -> token embedding (B, T, d) ------+                  |
  [bos] + target[:-1] -> decoder (causal self-attention, cross-attention) --+-> logits (B, L, vocab)

* The encoder reads one sequence: the prompt's text tokens first, then the image's patch tokens,
  each tagged by a modality embedding. Examples without an image (``has_image`` False) keep their
  patch slots, masked out like padding, so one batch mixes text-only and image examples; a batch
  with no image at all skips the vision tower and has memory (B, T, d).
* Every output is a vocabulary id (words, schema tokens, box coordinates ``<loc_k>`` alike), so one
  embedding matrix, tied to the output head, serves all tasks and ``schema.parse`` reads what
  ``generate`` writes.
* Attention is ``F.scaled_dot_product_attention`` with boolean masks (True = may attend). No query
  row is ever fully masked: ``encode`` refuses an example with neither prompt tokens nor an image,
  and a decoder position always sees itself.
* ``ModelConfig`` holds every field that fixes a tensor shape or the meaning of an id; run.py saves
  it inside every weights file, so a network rebuilds from its own file.
* With ``tag_weight`` > 0 a linear tagger reads the encoder's text positions and names each word's
  event type, or none (tensors.piece_tags): a sentence-level target gives the encoder one signal
  per sentence (its first target token says "event" or "nothing"), the tags one per word, which a
  network trained from scratch on a few thousand real sentences lacks (what it bought on dev and
  test: experiments/real_text.md, section i). Decoding does not read the tagger.
* ``example_losses`` feeds a list of encoded examples through the network (text-only and image
  examples as two sub-batches) for train.py's loss; ``dev_loss`` is its mean per task.

What this file does not do: tokenisation and image loading (tensors.py), LoRA layers (lora.py),
prompts, task mixing and loss weights (tasks.py), weights files (run.py), optimisers and training
loops (train.py), reading records out of ids (schema.parse).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import schema as S
import tensors


@dataclass
class ModelConfig:
    """Every field fixes a tensor shape or the meaning of an id;
    all of them are saved with each checkpoint."""
    vocab_size: int           # from the tokenizer (sentencepiece pieces + schema.SPECIAL_TOKENS)
    pad_id: int = tensors.PAD_ID  # the tokenizer's fixed ids (tensors.Tokenizer)
    bos_id: int = tensors.BOS_ID
    eos_id: int = tensors.EOS_ID
    d_model: int = 256        # encoder and decoder width
    n_heads: int = 4
    enc_layers: int = 3
    dec_layers: int = 3
    mlp_ratio: int = 4        # MLP hidden width = mlp_ratio * width
    dropout: float = 0.0      # off by default (experiments/vision.md, "earlier choices")
    max_text_len: int = 128   # prompt positions (learned)
    max_target_len: int = 64  # decoder positions, bos included: at most this many generated tokens
    image_size: int = 64      # S: tensors.py letterboxes every image onto an S x S canvas
    patch_size: int = 8       # (S / P)^2 patch tokens per image
    vision_width: int = 192
    tag_weight: float = 0.0   # the trigger tagging loss's weight per tagged example (0: no tagger)
    grounding_width: int = 64   # the grounding head's CNN: widths W/4, W/2, W

    def __post_init__(self):
        for what, a, b in [("d_model", self.d_model, self.n_heads),
                           ("image_size", self.image_size, self.patch_size)]:
            if a % b:
                raise ValueError(f"ModelConfig: {what}={a} is not divisible by {b}")
        if self.image_size < 16:
            raise ValueError(f"ModelConfig: image_size={self.image_size} is below 16 (the "
                             f"grounding head halves it four times)")
        if self.patch_size < 2 or self.patch_size & (self.patch_size - 1):
            raise ValueError(f"ModelConfig: patch_size={self.patch_size} must be a power of two "
                             f"(the conv stem halves it)")


# Named sizes for train.py --model-size (fields of ModelConfig that differ from its defaults).
MODEL_SIZES = {
    "tiny": dict(d_model=128, n_heads=4, enc_layers=2, dec_layers=2,
                 vision_width=128),
    "small": dict(d_model=192, n_heads=4, enc_layers=2, dec_layers=2,
                  vision_width=128),
    "base": dict(),
}


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple's MPS, then the CPU; any other name is taken as given, if this
    machine has it (else ValueError, before any work: torch would fail deep inside the first
    ``.to``)."""
    if name == "auto":
        name = ("cuda" if torch.cuda.is_available()
                else "mps" if torch.backends.mps.is_available()
                else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N or mps)") from None
    found = {"cpu": 1, "cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0,
             "mps": int(torch.backends.mps.is_available())}.get(device.type)
    if found is None:
        raise ValueError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N or mps)")
    if (device.index or 0) >= found:
        raise ValueError(f"device {name!r}: this machine's torch {torch.__version__} sees "
                         f"{found} {device.type} device(s)")
    return device


# ============================================================================= network
class Attention(nn.Module):
    """Multi-head attention: self-attention when ``context`` is None, else cross-attention to it.

    ``cache`` (a dict, decoding only) keeps keys/values between calls: self-attention appends the
    new steps' keys/values, cross-attention computes the memory's once and reuses them.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def heads(self, x):
        B, T, C = x.shape
        return x.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, H, T, C/H)

    def forward(self, x, context=None, mask=None, causal=False, cache=None):
        q = self.heads(self.q(x))                                         # (B, H, T, D)
        if cache is not None and context is not None and "k" in cache:
            k, v = cache["k"], cache["v"]  # memory keys/values: computed once
        else:
            src = x if context is None else context
            k, v = self.heads(self.k(src)), self.heads(self.v(src))       # (B, H, S, D)
            if cache is not None and "k" in cache:  # self-attention: append the new steps
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            if cache is not None:
                cache["k"], cache["v"] = k, v
        T, S = q.size(2), k.size(2)
        if causal and T > 1:  # query t is absolute position S - T + t and sees keys up to there
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.o(y.transpose(1, 2).reshape(x.shape))                # (B, T, C)


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2, self.drop = (nn.Linear(dim, ratio * dim), nn.Linear(ratio * dim, dim),
                                         nn.Dropout(dropout))

    def forward(self, x):
        return self.drop(self.fc2(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm transformer block.

    A decoder block (``decoder=True``) is causal and cross-attends to memory.
    """

    def __init__(self, dim: int, n_heads: int, mlp_ratio: int, dropout: float,
                 decoder: bool = False):
        super().__init__()
        self.decoder = decoder
        self.ln1, self.attn = nn.LayerNorm(dim), Attention(dim, n_heads, dropout)
        if decoder:
            self.ln_cross, self.cross_attn = nn.LayerNorm(dim), Attention(dim, n_heads, dropout)
        self.ln2, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None, memory=None, memory_mask=None, cache=None):
        """``mask``/``memory_mask``: (B, 1, 1, S) key masks;
        ``cache``: this layer's dict (decoder only)."""
        self_cache = cross_cache = None
        if cache is not None:
            self_cache, cross_cache = cache.setdefault("self", {}), cache.setdefault("cross", {})
        x = x + self.drop(self.attn(self.ln1(x), mask=mask, causal=self.decoder, cache=self_cache))
        if self.decoder:
            x = x + self.drop(self.cross_attn(self.ln_cross(x), context=memory, mask=memory_mask,
                                              cache=cross_cache))
        return x + self.mlp(self.ln2(x))


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each with BatchNorm and ReLU, then (``pool``) a 2x2 max-pool:
    (B, a, H, W) -> (B, b, H/2, W/2), or (B, b, H, W) without the pool.

    BatchNorm's statistics are those of the batch's images only: Seq2Seq.encode runs the tower on
    the examples that have an image (example_losses forwards them as their own sub-batch), and
    under DDP each process's images. GroupNorm, which has no batch statistics, learned far more
    slowly (experiments/vision.md)."""

    def __init__(self, a: int, b: int, pool: bool):
        layers = []
        for c_in in (a, b):
            layers += [nn.Conv2d(c_in, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        super().__init__(*layers, *([nn.MaxPool2d(2)] if pool else []))


class VisionTower(nn.Module):
    """A convolutional network whose last feature map becomes the patch tokens, projected to
    d_model (the encoder mixes them with the text).

    The stem is a plain VGG-style classifier cut before its pooling: log2(P) blocks of two 3x3
    convolutions + BatchNorm + ReLU, each halving the map, widths doubling up to vision_width,
    and one block at the final (S/P x S/P) resolution. Trained from scratch on about a thousand
    small pictures, such a network learns the toy compositions; a ViT with a light conv stem did
    not (experiments/vision.md). Each cell of the final map sees a P x P patch and its surround,
    and stays one token, so boxes can still be read from token positions.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n_down = cfg.patch_size.bit_length() - 1  # patch_size is a power of two (ModelConfig)
        widths = [cfg.vision_width // 2 ** (n_down - i) for i in range(n_down)] + [cfg.vision_width]
        self.stem = nn.Sequential(*(ConvBlock(a, b, pool=i < n_down)
                                    for i, (a, b) in enumerate(zip([3] + widths, widths))))
        n_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.pos = nn.Parameter(torch.randn(1, n_patches, cfg.vision_width) * 0.02)
        self.ln, self.proj = (nn.LayerNorm(cfg.vision_width),
                              nn.Linear(cfg.vision_width, cfg.d_model))

    def forward(self, images):
        x = self.stem(images)                        # (B, W, S/P, S/P)
        x = x.flatten(2).transpose(1, 2) + self.pos  # (B, N, W), cells in row-major order
        return self.proj(self.ln(x))                 # (B, N, d_model)


class Grounding(nn.Module):
    """Is the named entity in the picture? The grounding head: its own small CNN (the picture
    average-pooled to half size, then three blocks of two 3x3 convolutions + BatchNorm + ReLU and a
    2x2 max-pool, widths W/4, W/2, W for W = grounding_width, global average pool) read by a name
    vector (the mean of the name's pieces' vectors in a table of its own), one logit per (picture,
    name).

    Why a head beside the encoder-decoder: the relation task's decoder, and a head over the shared
    tower's features, both stayed near AUC 0.75 on MNRE dev where this CNN trained alone reaches
    0.96 (experiments/grounding.md, section 7). Why the name table is drawn N(0, 1), not the
    network's N(0, 0.02): at that small start the head stayed at 0.74 however it was built or
    trained (section 7i). Trained only by the relation task's grounding targets."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w, self.pad_id = cfg.grounding_width, cfg.pad_id
        # a 2x2 average pool first: at full resolution the first block cost as much as the rest,
        # and the default run went past its 10 minutes (experiments/grounding.md, section 8)
        self.stem = nn.Sequential(nn.AvgPool2d(2), *(ConvBlock(a, b, pool=True) for a, b in
                                                     zip((3, w // 4, w // 2), (w // 4, w // 2, w))))
        self.names = nn.Embedding(cfg.vocab_size, w)
        self.bias = nn.Parameter(torch.zeros(()))
        # how many grounding targets trained it (rmpl.py's grounded links need some), and which
        # name pieces (1 = trained): a name of other pieces reads untrained vectors, a random score
        self.register_buffer("targets_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("known", torch.zeros(cfg.vocab_size, dtype=torch.uint8))
        self.reset_parameters()

    def reset_parameters(self):
        """The name table at unit scale (class docstring); Seq2Seq calls it after its own init."""
        nn.init.normal_(self.names.weight, std=1.0)

    def forward(self, name_ids, images):
        """(B, K, P) the pieces of K names per picture, pad_id-padded; (B, 3, S, S) pictures
        -> (B, K) logits (a name of no pieces gets the bias alone)."""
        real = (name_ids != self.pad_id).unsqueeze(-1)                    # (B, K, P, 1)
        names = (self.names(name_ids) * real).sum(2) / real.sum(2).clamp(min=1)  # (B, K, W)
        pooled = self.stem(images).mean((2, 3))                           # (B, W)
        return (names * pooled[:, None]).sum(-1) / names.size(-1) ** 0.5 + self.bias

    def learned(self, name_ids):
        """Record (N, P) names that were grounding targets of a training step."""
        self.targets_seen += name_ids.size(0)
        self.known[name_ids[name_ids != self.pad_id]] = 1

    def knows(self, name_ids) -> torch.Tensor:
        """(B, K, P) names -> (B, K) bool: the name has pieces, and every one was trained."""
        real = name_ids != self.pad_id
        return real.any(-1) & (self.known[name_ids].bool() | ~real).all(-1)


class Seq2Seq(nn.Module):
    """The RMPL-mini network. A batch is the dict tensors.py's collate makes:

    ``input_ids`` (B, T) long, pad_id-padded; ``images`` (B, 3, S, S) float, normalised, zeros where
    there is no image; ``has_image`` (B,) bool; ``target_ids`` (B, L) long: the target WITHOUT bos,
    ending in eos, pad_id-padded. Other keys are ignored.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg, d = cfg, cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.text_pos, self.target_pos = (nn.Embedding(cfg.max_text_len, d),
                                          nn.Embedding(cfg.max_target_len, d))
        self.modality = nn.Embedding(2, d)  # row 0: text token, row 1: image patch
        self.vision, self.grounding = VisionTower(cfg), Grounding(cfg)
        self.encoder = nn.ModuleList(Block(d, cfg.n_heads, cfg.mlp_ratio, cfg.dropout)
                                     for _ in range(cfg.enc_layers))
        self.decoder = nn.ModuleList(Block(d, cfg.n_heads, cfg.mlp_ratio, cfg.dropout, decoder=True)
                                     for _ in range(cfg.dec_layers))
        self.ln_enc, self.ln_dec, self.drop = (nn.LayerNorm(d), nn.LayerNorm(d),
                                               nn.Dropout(cfg.dropout))
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        # tied: reading and writing an id use the same vector
        self.head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        self.grounding.reset_parameters()
        if cfg.tag_weight:  # after the others: their initial weights do not depend on it
            self.tagger = nn.Linear(d, 1 + len(S.EVENT_TYPES))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):  # GPT-2 style: N(0, 0.02), zero biases
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def encode(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> memory (B, S, d) and memory_mask (B, S) bool, True at real tokens.

        S = T + N, or T with no image.
        """
        cfg, ids, has_image = self.cfg, batch["input_ids"], batch["has_image"]
        B, T = ids.shape
        if T > cfg.max_text_len:
            raise ValueError(f"input_ids has {T} positions, "
                             f"more than max_text_len={cfg.max_text_len}")
        x = (self.tok_emb(ids) + self.text_pos(torch.arange(T, device=ids.device))
             + self.modality.weight[0])
        mask = ids != cfg.pad_id                                               # (B, T)
        if has_image.any():
            images, S = batch["images"], cfg.image_size
            if tuple(images.shape[1:]) != (3, S, S):
                raise ValueError(f"images have shape {tuple(images.shape)}, "
                                 f"expected (B, 3, {S}, {S})")
            # (B_img, N, d): real images only
            feats = self.vision(images[has_image])
            patches = feats.new_zeros(B, *feats.shape[1:])
            # (B, N, d), zeros without image
            patches[has_image] = feats
            x = torch.cat([x, (patches + self.modality.weight[1]).to(x.dtype)], 1)  # (B, T + N, d)
            mask = torch.cat([mask, has_image[:, None].expand(B, feats.size(1))], 1)
        empty = (~mask.any(1)).nonzero().flatten().tolist()
        if empty:  # nothing to attend to: a fully masked attention row
            raise ValueError(f"batch examples {empty} have no prompt tokens and no image")
        x = self.drop(x)
        for block in self.encoder:
            # key mask (B, 1, 1, S)
            x = block(x, mask=mask[:, None, None, :])
        return self.ln_enc(x), mask

    def presence(self, batch) -> torch.Tensor:
        """(B, K) logits that each name of ``name_ids`` (B, K, P) is in its example's picture (the
        grounding head); NaN where the name has no pieces or the example no picture."""
        name_ids, has_image = batch["name_ids"], batch["has_image"]
        named = (name_ids != self.cfg.pad_id).any(-1)                       # (B, K)
        out = torch.full(named.shape, float("nan"), device=name_ids.device)
        rows = has_image & named.any(1)
        if rows.any():
            out[rows] = self.grounding(name_ids[rows], batch["images"][rows]).float()
        return out.masked_fill(~named, float("nan"))

    def decode(self, target_in, memory, memory_mask,
               cache: Optional[list[dict]] = None) -> torch.Tensor:
        """Decoder input ids (B, L) -> logits (B, L, vocab).

        ``cache``: one dict per decoder layer (start with ``[{} for _ in model.decoder]``); when
        given, ``target_in`` holds only the new steps and positions continue after the cached ones.
        """
        B, L = target_in.shape
        past = cache[0]["self"]["k"].size(2) if cache and "self" in cache[0] else 0
        if past + L > self.cfg.max_target_len:
            raise ValueError(f"decoder input reaches {past + L} positions, "
                             f"more than max_target_len={self.cfg.max_target_len}")
        x = self.drop(self.tok_emb(target_in)
                      + self.target_pos(torch.arange(past, past + L, device=target_in.device)))
        key_mask = memory_mask[:, None, None, :]                               # (B, 1, 1, S)
        for i, block in enumerate(self.decoder):
            x = block(x, memory=memory, memory_mask=key_mask,
                      cache=None if cache is None else cache[i])
        return self.head(self.ln_dec(x))

    def forward(self, batch, reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits (B, L, vocab), loss). Teacher forcing on decoder input [bos] + target[:-1].

        A relation example also carries grounding targets (``name_ids`` (B, K, P), ``present``
        (B, K): 1 / 0, NaN where unknown; ``grounding_targets``): each is one more prediction of
        the example, the grounding head's, whose binary cross-entropy counts as one more token.
        With a tagger, a text example's word tags (``tags`` (B, T), -1 where no word) are one more
        (``tagging_loss``).
        reduction="mean": cross-entropy averaged over every prediction of the batch.
        reduction="sum": (B,) each example's cross-entropy summed over its predictions, for
        tasks.multitask_loss to weigh per task.
        """
        # (B, L): ... eos pad pad
        target = batch["target_ids"]
        B, L = target.shape
        # (B, L)
        target_in = torch.cat([target.new_full((B, 1), self.cfg.bos_id), target[:, :-1]], 1)
        memory, memory_mask = self.encode(batch)
        logits = self.decode(target_in, memory, memory_mask)
        ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=self.cfg.pad_id,
                             reduction="none").view(B, L).sum(1)              # 0 at pad positions
        ce = ce + self.tagging_loss(batch, memory)
        targets = grounding_targets(batch)                                  # (B, K) bool
        if targets.any():
            # checked on the ids: the head's own NaN also comes from non-finite weights
            if not (batch["name_ids"] != self.cfg.pad_id).any(-1)[targets].all():
                raise ValueError("a grounding target (present) for a name of no pieces")
            bce = F.binary_cross_entropy_with_logits(
                self.presence(batch), batch["present"].nan_to_num(), reduction="none")
            bce = bce.masked_fill(~targets, 0.0)   # NaN where no name or picture: not a target
            ce = ce + bce.sum(1)
            if self.training:
                self.grounding.learned(batch["name_ids"][targets])
        if reduction == "mean":
            return logits, ce.sum() / ((target != self.cfg.pad_id).sum() + targets.sum()
                                       + self.tagged(batch).sum())
        if reduction == "sum":
            return logits, ce
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")

    def tagging_loss(self, batch, memory) -> torch.Tensor:
        """(B,) tag_weight times each tagged example's mean cross-entropy of the trigger tags of
        its words (tensors.piece_tags), read from the encoder's text positions; 0 elsewhere."""
        if not self.tagged(batch).any():
            return memory.new_zeros(memory.size(0))
        tags = batch["tags"]
        logits = self.tagger(memory[:, :tags.size(1)]).float()               # (B, T, tags)
        ce = F.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=-1,
                             reduction="none").view(tags.shape)
        return self.cfg.tag_weight * ce.sum(1) / (tags >= 0).sum(1).clamp(min=1)

    def tagged(self, batch) -> torch.Tensor:
        """(B,) 1 for an example whose words carry tags the tagger learns (one more prediction)."""
        tags = batch.get("tags")
        if not self.cfg.tag_weight or tags is None:
            return batch["input_ids"].new_zeros(batch["input_ids"].size(0))
        return (tags >= 0).any(1).long()

    @torch.no_grad()
    def generate(self, batch, max_new_tokens: int, allowed: Optional[torch.Tensor] = None,
                 use_cache: bool = True, eos_bias: Optional[torch.Tensor] = None
                 ) -> list[list[int]]:
        """Greedy decoding of the whole batch; each sequence stops at its eos.

        Call ``model.eval()`` first. Returns one list of ids per example, without bos and eos. At
        most ``max_target_len`` tokens are generated (the decoder has no positions beyond).
        ``allowed`` (B, vocab) bool, if given, masks out the ids an example may never write
        (constrained decoding: rmpl.py allows the schema's tokens, eos and the ids of the example's
        own prompt, so words are copied, never invented); each row must allow eos.
        ``use_cache=False`` re-runs the decoder over the whole prefix at every step: same tokens,
        slower (for tests and benchmarks). ``eos_bias`` (vocab,), if given, is added to eos's logit
        according to the token written just before: ``eos_bias[bos]`` at the first step, where eos
        means "the empty output" (rmpl.py's ``no_event_bias`` uses it, and a large negative value
        after the tokens that must be followed by more).
        """
        cfg = self.cfg
        memory, memory_mask = self.encode(batch)
        B = memory.size(0)
        # (B, 1 + steps)
        out = torch.full((B, 1), cfg.bos_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(B, dtype=torch.bool, device=memory.device)
        cache = [{} for _ in self.decoder] if use_cache else None
        eos_bias = None if eos_bias is None else eos_bias.to(memory.device)
        for _ in range(min(max_new_tokens, cfg.max_target_len)):
            logits = self.decode(out[:, -1:] if use_cache else out,
                                 memory, memory_mask, cache)[:, -1]            # (B, V)
            if allowed is not None:
                logits = logits.masked_fill(~allowed, float("-inf"))
            if eos_bias is not None:
                logits[:, cfg.eos_id] += eos_bias[out[:, -1]]
            token = torch.where(done, cfg.pad_id, logits.argmax(-1))  # finished rows emit pad
            out = torch.cat([out, token[:, None]], 1)
            done |= token == cfg.eos_id
            if done.all():
                break
        rows = [row[1:] for row in out.tolist()]
        return [row[:row.index(cfg.eos_id)] if cfg.eos_id in row else row for row in rows]


# ======================================================================= examples in, losses out
def grounding_targets(batch) -> torch.Tensor:
    """(B, K) bool: the grounding head's targets, a finite ``present`` (1 / 0) of a name of an
    example with a picture; none where the batch has no ``present``."""
    present = batch.get("present")
    if present is None:
        return torch.zeros_like(batch["has_image"])[:, None]
    return torch.isfinite(present) & batch["has_image"][:, None]


def example_losses(net, items: list[dict],
                   device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example CE sums, prediction counts (target tokens, plus one per grounding target and one
    for tagged words) and task ids of encoded examples: the inputs of tasks.multitask_loss.

    Text-only examples and examples with an image go through the network as two sub-batches: in one
    mixed batch every text example would carry the image's masked patch slots through every encoder
    layer. The losses are the same; the compute is not.
    """
    pad_id = getattr(net, "module", net).cfg.pad_id  # a DDP wrapper keeps the network in .module
    out = []
    for group in ([e for e in items if not e["has_image"]], [e for e in items if e["has_image"]]):
        if group:
            batch = {k: v.to(device) for k, v in tensors.collate(group, pad_id).items()}
            _, ce_sum = net(batch, reduction="sum")
            predictions = ((batch["target_ids"] != pad_id).sum(1) + grounding_targets(batch).sum(1)
                           + getattr(net, "module", net).tagged(batch))
            out.append((ce_sum.float(), predictions, batch["task_ids"]))
    return tuple(torch.cat(parts) for parts in zip(*out))


@torch.no_grad()
def dev_loss(net, dev: dict, n_batches: int, batch_size: int, device) -> dict[str, float]:
    """Mean token cross-entropy per task on the first ``n_batches`` batches of each dev task
    (global batches under DDP: the same dev examples whatever the number of processes)."""
    net.eval()
    out = {}
    for task, encoded in dev.items():
        total = n = 0
        for i in range(0, min(len(encoded), n_batches * batch_size), batch_size):
            ce_sum, tokens, _ = example_losses(net, encoded[i:i + batch_size], device)
            total, n = total + ce_sum.sum().item(), n + tokens.sum().item()
        out[task] = total / max(n, 1)
    net.train()
    return out
