"""Tensors: records become numbers in four steps.

    Tokenizer    schema tokens + words <-> ids (sentencepiece BPE; one fixed id per schema token)
    load_image   an image file -> (3, S, S) letterboxed float tensor in the frame schema's boxes use
    encode       a task Example (tasks.py) -> ids and image; collate -> the batch the model reads
    TaskSampler  an endless, seeded, resumable sampler that mixes tasks by given weights

What this file does not do: read the source formats (data.py), build prompts and targets
(tasks.py), or decide what a model does with the batch (model.py).
"""
from __future__ import annotations

import io
import itertools
import random
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm
import torch
from PIL import Image as PILImage

from data import DataError, encodable
from schema import LOC_TOKENS, NUM_BINS, ROLE_TOKENS, SPECIAL_TOKENS, TASKS
from tasks import Example

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
FIRST_SPECIAL_ID = 4  # schema.SPECIAL_TOKENS[i] has id FIRST_SPECIAL_ID + i
_SPECIAL_ID = {tok: FIRST_SPECIAL_ID + i for i, tok in enumerate(SPECIAL_TOKENS)}
_SPECIAL_OF = {i: tok for tok, i in _SPECIAL_ID.items()}


class Tokenizer:
    """Sentencepiece BPE over words, with every schema token as one id.

    Ids: 0 <pad>, 1 <unk>, 2 <s> (bos), 3 </s> (eos), then schema.SPECIAL_TOKENS in their order (ids
    4 .. 4 + len - 1, sentencepiece control symbols: text never encodes to them, encode splices them
    in by id), then 256 byte pieces <0x00>..<0xFF>, then the learned pieces.

    BPE rather than unigram: its merges are greedy and deterministic, on a small corpus its pieces
    are frequent whole words (readable in logs), and it fills vocab_size exactly when the corpus
    allows (unigram prunes below it). Unigram's advantage, subword sampling, is not used here.

    Words are joined by single spaces and each run of words between schema tokens is encoded as one
    string; decode splits sentencepiece's output on spaces, so word boundaries come back.
    Normalisation is "identity" (NFKC would rewrite words and break their alignment to word offsets)
    and byte_fallback=True: a character unseen in training (or rarer than character_coverage) is
    written as its UTF-8 bytes, so any word round-trips exactly and encode never emits <unk>. A word
    cannot hold a space or sentencepiece's boundary mark '\u2581' (encode refuses them); a word
    spelled like a schema token ("<head>") is read as that token.
    """

    def __init__(self, model_proto: bytes, source: str = "<memory>"):
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except RuntimeError as e:
            raise DataError(f"{source}: not a sentencepiece model ({e})") from None
        self.proto = model_proto  # the .model file's bytes: what save() writes
        n = self.sp.get_piece_size()
        # a model trained with another schema version would silently map <loc_3> to another token
        bad = [t for t, i in _SPECIAL_ID.items() if i >= n or self.sp.id_to_piece(i) != t]
        if bad or (self.sp.pad_id(), self.sp.unk_id(),
                   self.sp.bos_id(), self.sp.eos_id()) != (0, 1, 2, 3):
            raise DataError(f"{source}: tokenizer does not match this schema ({len(bad)} special "
                            f"tokens missing or moved, first {bad[:1]}); retrain it")

    @classmethod
    def train(cls, texts: Iterable[str | Sequence[str]], vocab_size: int = 2000,
              seed: int = 0) -> Tokenizer:
        """Train on training text only: each item a sentence string or a token list
        (schema tokens dropped).

        Deterministic: the same texts, vocab_size and seed give a byte-identical model. vocab_size
        includes the 4 + len(SPECIAL_TOKENS) + 256 fixed pieces and must also hold every training
        character (else ValueError); on a tiny corpus the vocabulary comes out smaller
        (hard_vocab_limit=False).
        """
        lines = [t if isinstance(t, str) else " ".join(w for w in t if w not in _SPECIAL_ID)
                 for t in texts]
        lines = [line for line in lines if line.strip()]
        if not lines:
            raise ValueError("Tokenizer.train: no training text")
        # BPE itself is deterministic; this pins sentence sampling
        spm.set_random_generator_seed(seed)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
                vocab_size=vocab_size, hard_vocab_limit=False, normalization_rule_name="identity",
                byte_fallback=True, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                control_symbols=list(SPECIAL_TOKENS),
                max_sentence_length=1 << 16,  # the default (4192 bytes) silently skips longer lines
                # num_threads is written into the model: fix it for identical bytes
                num_threads=1, minloglevel=2)
        except RuntimeError as e:
            # e.g. "Vocabulary size is smaller than required_chars. 300 vs 412"
            raise ValueError(f"Tokenizer.train(vocab_size={vocab_size}) failed: {e}") from None
        return cls(model.getvalue())

    def save(self, path) -> None:
        Path(path).write_bytes(self.proto)

    @classmethod
    def load(cls, path) -> Tokenizer:
        return cls(Path(path).read_bytes(), source=str(path))

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Schema tokens and words -> ids. No bos/eos: encode_example adds eos to targets."""
        ids: list[int] = []
        for special, run in itertools.groupby(tokens, key=_SPECIAL_ID.__contains__):
            if special:
                ids += [_SPECIAL_ID[t] for t in run]
                continue
            words = list(run)
            for w in words:
                if not encodable(w):
                    raise ValueError(f"cannot encode word {w!r}: words are non-empty strings of "
                                     f"valid unicode without ' ' or '\u2581'")
            ids += self.sp.encode(" ".join(words))
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Ids -> schema tokens and whole words. Never raises: pad, bos, eos and ids outside the
        vocabulary are dropped, an <unk> reads as '\u2047', a broken byte sequence as '\ufffd'."""
        # a tensor or a list
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]
        ids = [i for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID) and 0 <= i < self.vocab_size]
        out: list[str] = []
        for special, run in itertools.groupby(ids, key=_SPECIAL_OF.__contains__):
            if special:
                out += [_SPECIAL_OF[i] for i in run]
            else:  # split on ' ' only: other whitespace (tab, no-break space) is part of a word
                out += [w for w in self.sp.decode(list(run)).split(" ") if w]
        return out


# ----------------------------------------------------------------------------- images
# Normalisation with ImageNet statistics, the usual choice (it keeps a pretrained vision encoder
# usable). The letterbox padding and "no image" are zeros after normalising, i.e. the mean colour.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
# refuse to decode more (about 150 MB as RGB) after JPEG draft scaling
MAX_DECODE_PIXELS = 50_000_000


def _to_rgb(img: PILImage.Image) -> PILImage.Image:
    """Any pillow mode -> RGB. 16/32-bit grey is scaled from 0..65535 (float 'F' from 0..1) to 8
    bits; transparency is composited onto white (transparent web images are mostly drawn for white
    pages)."""
    if img.mode.startswith("I") or img.mode == "F":
        scale = 255 / 65535 if img.mode.startswith("I") else 255
        grey = np.clip(np.asarray(img, dtype=np.float64) * scale, 0, 255).round().astype(np.uint8)
        img = PILImage.fromarray(grey, "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        img = PILImage.alpha_composite(PILImage.new("RGBA", img.size, (255, 255, 255, 255)),
                                       img.convert("RGBA"))
    return img.convert("RGB")


def load_image(path, size: int,
               max_pixels: int = MAX_DECODE_PIXELS) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image file -> ((3, size, size) normalised float tensor, (W, H) of the file).

    Letterbox: scale s = size / max(W, H), resize to (round(W s), round(H s)) and paste at the
    top-left of a size x size canvas of zeros. Canvas pixel j then covers original pixels
    [j L / size, (j+1) L / size) with L = max(W, H) (up to half a canvas pixel of rounding at the
    far edge): exactly the frame schema.box_to_tokens quantises, so with size = NUM_BINS canvas
    pixel k is location bin k.
    Huge files: JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still covers `size`
    (Image.draft); anything still above max_pixels is refused, and pillow itself refuses files above
    2 * Image.MAX_IMAGE_PIXELS before decoding (DecompressionBombError). EXIF orientation is not
    applied: boxes are in the stored pixel frame. Raises DataError naming the file.
    """
    try:
        with PILImage.open(path) as img:
            W, H = img.size
            img.draft("RGB", (size, size))  # no-op unless JPEG; keeps both sides >= size
            if img.width * img.height > max_pixels:
                raise DataError(f"{path}: {W}x{H} image too large to decode "
                                f"(more than {max_pixels} pixels)")
            img = _to_rgb(img)
    except DataError:
        raise
    except Exception as e:
        # pillow signals a bad file with many exception types (OSError, SyntaxError, ...)
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    s = size / max(W, H)
    w, h = max(1, round(W * s)), max(1, round(H * s))
    pixels = np.asarray(img.resize((w, h), PILImage.BILINEAR), dtype=np.float32) / 255  # (h, w, 3)
    x = torch.from_numpy(pixels).permute(2, 0, 1)  # (3, h, w)
    x = (x - torch.tensor(IMAGE_MEAN).view(3, 1, 1)) / torch.tensor(IMAGE_STD).view(3, 1, 1)
    canvas = torch.zeros(3, size, size)
    canvas[:, :h, :w] = x
    return canvas, (W, H)


class ImageCache:
    """load_image behind an in-memory LRU cache of at most max_bytes (default 1 GiB: about 5,000
    images at size 128, 1,700 at 224), so training is not bound by decoding. Returned tensors are
    shared: do not modify them in place (collate copies them with torch.stack)."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes, self.nbytes, self.items = max_bytes, 0, OrderedDict()

    def load(self, path, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
        key = (str(path), size)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        item = self.items[key] = load_image(path, size)
        self.nbytes += item[0].nbytes
        while self.nbytes > self.max_bytes and len(self.items) > 1:  # evict least recently used
            self.nbytes -= self.items.popitem(last=False)[1][0].nbytes
        return item


# ----------------------------------------------------------------------------- examples and batches
def encode_example(ex: Example, tokenizer: Tokenizer, image_size: int, max_input_len: int = 256,
                   max_target_len: int = 256, cache: ImageCache | None = None) -> dict:
    """Example -> dict of tensors for collate, plus how many ids were cut.

    target_ids = encode(target) + eos (no bos: the model shifts and prepends its own start token).
    Truncation keeps the first max_input_len / max_target_len ids (a cut target loses its eos, so
    the model is never taught to stop early); the cut counts are returned as input_cut / target_cut
    (``cuts`` adds them up).
    """
    try:
        input_ids = tokenizer.encode(ex.prompt)
        target_ids = tokenizer.encode(ex.target) + [tokenizer.eos_id]
        names = [torch.tensor(tokenizer.encode(list(name)), dtype=torch.long)
                 for name, _ in ex.grounding]
        tags = piece_tags(ex, tokenizer, len(input_ids))
    except ValueError as e:
        raise ValueError(f"{ex.task} example {ex.meta}: {e}") from None
    input_cut, target_cut = (max(0, len(input_ids) - max_input_len),
                             max(0, len(target_ids) - max_target_len))
    image = torch.zeros(3, image_size, image_size)
    if ex.image is not None:
        image, wh = (cache.load if cache is not None else load_image)(ex.image, image_size)
        if ex.size is not None and tuple(ex.size) != wh:
            raise DataError(f"{ex.image}: file is {wh[0]}x{wh[1]} but {ex.task} example {ex.meta} "
                            f"says {ex.size[0]}x{ex.size[1]}: its boxes would be in another frame")
    return {"input_ids": torch.tensor(input_ids[:max_input_len], dtype=torch.long),
            "tags": torch.tensor(tags[:max_input_len], dtype=torch.long),
            "target_ids": torch.tensor(target_ids[:max_target_len], dtype=torch.long),
            "image": image, "has_image": ex.image is not None, "task_id": TASKS.index(ex.task),
            "names": names, "present": [float("nan") if p is None else float(p)
                                        for _, p in ex.grounding],
            "input_cut": input_cut, "target_cut": target_cut,
            "bins_wide": _bins_wide(ex.size) if ex.image is not None and ex.size else 0}


def piece_tags(ex: Example, tokenizer: Tokenizer, n_ids: int) -> list[int]:
    """The prompt's word tags (tasks.Example.word_tags) per id: each piece of a word gets the
    word's tag, the ids before the words (task token, separator) -1, as every id of a prompt
    without tags."""
    if ex.word_tags is None:
        return [-1] * n_ids
    cut = len(ex.prompt) - len(ex.word_tags)
    head = len(tokenizer.encode(ex.prompt[:cut]))
    tags = [t for w, t in zip(ex.prompt[cut:], ex.word_tags) for _ in tokenizer.encode([w])]
    if head + len(tags) != n_ids:  # words encoded one by one must give the sentence's pieces
        raise ValueError(f"word tags give {head + len(tags)} ids, the prompt has {n_ids}")
    return [-1] * head + tags


def cuts(encoded: list[dict]) -> Counter:
    """How many encoded examples there are, and how many had their prompt or target cut."""
    return Counter(examples=len(encoded), input_truncated=sum(e["input_cut"] > 0 for e in encoded),
                   target_truncated=sum(e["target_cut"] > 0 for e in encoded))


def _bins_wide(size: tuple[int, int]) -> int:
    """How many location bins (and canvas pixels at image_size = NUM_BINS) the letterboxed image's
    width covers: hflip mirrors bins and pixels inside this width, not across the padding."""
    return max(1, round(NUM_BINS * size[0] / max(size)))


def collate(encoded: list[dict], pad_id: int = PAD_ID) -> dict[str, torch.Tensor]:
    """encode_example outputs -> the batch: exactly input_ids, images, has_image, target_ids,
    task_ids, tags (B, T) (each id's word tag, tasks.Example.word_tags; -1 where none), and the
    grounding head's questions: name_ids (B, K, P), each example's names
    (tasks.Example.grounding) padded to the batch's most names K and longest name P, and present
    (B, K), 1 / 0 where the answer is known, NaN elsewhere.

    Padding is pad_id, which no real token uses, so a mask is simply `ids != pad_id`.
    """
    pad = lambda seqs: torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_id)
    return {"input_ids": pad([e["input_ids"] for e in encoded]),           # (B, T) long
            "images": torch.stack([e["image"] for e in encoded]),          # (B, 3, S, S) float
            "has_image": torch.tensor([e["has_image"] for e in encoded]),  # (B,) bool
            "target_ids": pad([e["target_ids"] for e in encoded]),         # (B, L) long
            "task_ids": torch.tensor([e["task_id"] for e in encoded], dtype=torch.long),  # (B,)
            "tags": torch.nn.utils.rnn.pad_sequence(                       # (B, T) long, -1: none
                [e.get("tags", torch.full(e["input_ids"].shape, -1)) for e in encoded],
                batch_first=True, padding_value=-1),
            **_grounding(encoded, pad_id)}


def _grounding(encoded: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    names = [e.get("names", []) for e in encoded]
    k, p = max(map(len, names), default=0), max((len(n) for ns in names for n in ns), default=0)
    name_ids = torch.full((len(encoded), max(k, 1), max(p, 1)), pad_id, dtype=torch.long)
    present = torch.full(name_ids.shape[:2], float("nan"))
    for b, e in enumerate(encoded):
        for j, (ids, answer) in enumerate(zip(names[b], e.get("present", []))):
            name_ids[b, j, :len(ids)], present[b, j] = ids, answer
    return {"name_ids": name_ids, "present": present}


# ----------------------------------------------------------------------------- augmentation
_LOC_ID0 = FIRST_SPECIAL_ID + SPECIAL_TOKENS.index(LOC_TOKENS[0])  # loc token ids are consecutive
_ROLE_IDS = {FIRST_SPECIAL_ID + SPECIAL_TOKENS.index(tok) for tok in ROLE_TOKENS.values()}


def _is_box(ids: list[int], i: int) -> bool:
    return i + 4 <= len(ids) and all(0 <= t - _LOC_ID0 < NUM_BINS for t in ids[i:i + 4])


def hflip(encoded: dict) -> dict:
    """An encoded example with an image, mirrored left to right: the letterboxed picture inside its
    own width (the padding stays at the right) and every box of the target, x1 x2 -> w-1-x2 w-1-x1
    in bins, exact when image_size = NUM_BINS. Arguments of one role are then re-sorted by position,
    so the target keeps the readers' canonical order. Examples without an image come back as they
    are."""
    w = encoded.get("bins_wide", 0)
    if not encoded["has_image"] or not w:
        return encoded
    image = encoded["image"].clone()  # cached images are shared (ImageCache)
    pw = round(w * image.shape[-1] / NUM_BINS)                    # canvas columns of the picture
    image[:, :, :pw] = image[:, :, :pw].flip(-1)                  # (3, S, S)
    ids, out, i = encoded["target_ids"].tolist(), [], 0
    while i < len(ids):
        if _is_box(ids, i):
            x1, y1, x2, y2 = (t - _LOC_ID0 for t in ids[i:i + 4])
            new_x1, new_x2 = max(0, w - 1 - x2), max(0, w - 1 - x1)
            out += [_LOC_ID0 + new_x1, ids[i + 1], _LOC_ID0 + new_x2, ids[i + 3]]
            i += 4
        else:
            out.append(ids[i])
            i += 1
    target = encoded["target_ids"].new_tensor(_sort_same_role(out))
    return {**encoded, "image": image, "target_ids": target}


def _sort_same_role(ids: list[int]) -> list[int]:
    """Runs of box arguments of one role ([role, 4 locs] repeated) sorted by (x1, y1, x2, y2)."""
    out, i = [], 0
    while i < len(ids):
        j = i
        while ids[i] in _ROLE_IDS and j < len(ids) and ids[j] == ids[i] and _is_box(ids, j + 1):
            j += 5
        if j > i:
            out += [t for arg in sorted(ids[k:k + 5] for k in range(i, j, 5)) for t in arg]
            i = j
        else:
            out.append(ids[i])
            i += 1
    return out


# ----------------------------------------------------------------------------- task sampling
class SamplerStateError(ValueError):
    """A sampler state that is not this sampler's: saved with another seed or other data."""


class TaskSampler:
    """Endless batches that mix tasks; the items are Examples or anything else (encoded dicts).

    Rule: each of the batch_size * world_size slots of a global batch draws its task independently
    with probability weights[task] / sum(weights) (tasks with weight 0 or no examples are never
    drawn); a task hands out its examples in a fresh shuffled order every epoch (its own epochs: a
    small task cycles more often). Step s's draws come from random.Random(f"{seed}/step/{s}") and
    task t's epoch e order from random.Random(f"{seed}/{t}/{e}"), so the whole state is the step and
    one cursor per task (`state_dict()`), and `load_state_dict` resumes bit-exactly. DDP: every rank
    draws the same global batch and keeps slots [rank * batch_size, (rank + 1) * batch_size), so
    ranks get disjoint examples (within an epoch) and share one state (``shard`` = (rank,
    world_size)). ``flip_prob``: the probability that an item is mirrored (``hflip``; examples
    with an image only), drawn per slot from random.Random(f"{seed}/flip/{s}"), so the flips too
    are a function of the step.
    """

    def __init__(self, datasets: dict[str, list], weights: dict[str, float], batch_size: int,
                 seed: int = 0, shard: tuple[int, int] = (0, 1), flip_prob: float = 0.0):
        rank, world_size = shard
        unknown = (set(datasets) - set(TASKS)) | (set(weights) - set(datasets))
        if (unknown or any(w < 0 for w in weights.values()) or not 0 <= rank < world_size
                or batch_size < 1):
            raise ValueError(f"TaskSampler: bad arguments (unknown tasks {sorted(unknown)}, "
                             f"weights {weights}, rank {rank} of {world_size}, "
                             f"batch_size {batch_size})")
        self.tasks = [t for t in TASKS if weights.get(t, 0) > 0 and datasets.get(t)]
        if not self.tasks:
            raise ValueError(f"TaskSampler: no task has both a positive weight and examples "
                             f"({weights})")
        self.datasets, self.weights = datasets, [weights[t] for t in self.tasks]
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.flip_prob = flip_prob  # of mirroring an item (an encoded dict with an image)
        self.step, self.cursor = 0, {t: 0 for t in self.tasks}
        self._order: dict[str, tuple[int, list[int]]] = {}  # task -> (epoch, shuffled indices)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "step": self.step, "cursor": dict(self.cursor),
                "sizes": {t: len(self.datasets[t]) for t in self.tasks}}

    def load_state_dict(self, state: dict) -> None:
        """SamplerStateError, saying what differs (the state's vs this sampler's), for a state of
        another seed or of other data: its positions would point at other examples."""
        sizes = self.state_dict()["sizes"]
        show = lambda n: ", ".join(f"{t} {k}" for t, k in n.items())
        differs = [f"seed {state['seed']} vs {self.seed}"] * (state["seed"] != self.seed)
        if state["sizes"] != sizes:
            differs.append(f"the task sizes differ ({show(state['sizes'])} vs {show(sizes)}): "
                           f"the data changed")
        if differs:
            raise SamplerStateError("; ".join(differs))
        self.step, self.cursor = (int(state["step"]),
                                  {t: int(state["cursor"][t]) for t in self.tasks})

    def _item(self, task: str, k: int):
        """The k-th item handed out by `task`: position k % n of its epoch k // n's order."""
        data = self.datasets[task]
        epoch, i = divmod(k, len(data))
        if self._order.get(task, (None,))[0] != epoch:
            order = list(range(len(data)))
            random.Random(f"{self.seed}/{task}/{epoch}").shuffle(order)
            self._order[task] = (epoch, order)
        return data[self._order[task][1][i]]

    def __iter__(self):
        return self

    def __next__(self) -> list:
        draws = random.Random(f"{self.seed}/step/{self.step}").choices(
            self.tasks, weights=self.weights, k=self.batch_size * self.world_size)
        flips = random.Random(f"{self.seed}/flip/{self.step}")  # from the step: resume stays exact
        batch = []
        for slot, task in enumerate(draws):
            flip = flips.random() < self.flip_prob  # drawn for every slot: the same on every rank
            if slot // self.batch_size == self.rank:
                item = self._item(task, self.cursor[task])
                batch.append(hflip(item) if flip else item)
            self.cursor[task] += 1
        self.step += 1
        return batch
