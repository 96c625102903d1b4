"""The grounding ceiling: a plain CNN that tells from the picture alone which named people it shows.

    python experiments/grounding_ceiling.py                                  # the CNN alone, 750 steps
    python experiments/grounding_ceiling.py --checkpoint runs/stage2         # and the model, same pairs

The pairs are the ones the relation task decides (grounding.presence_auc): for each MNRE question (a
sentence, its picture, a head name), the first relation whose tail is a figure says whether the name
is in the picture (``/per/misc/present_in``) or not (``None`` only). The CNN sees the picture, never
the sentence: vision_ceiling.py's layout (four blocks of two 3x3 convolutions + BatchNorm + ReLU and a
2x2 max-pool, widths 32-64-128-128, global average pool) with one logit per name of the cast (the
head names of the training and scored pairs), binary cross-entropy on the asked (picture, name)
entries only; AdamW lr 2e-3, weight decay 0.05, batch 32 pictures, pictures mirrored inside their own
width with probability 1/2, the 64 px letterbox of tensors.load_image. Every --eval-every steps and
on the last one it prints the ROC AUC of the name's logit over present vs absent --split pairs; with
--checkpoint, the model's on the same pairs beside it (grounding.presence_auc: its grounding head's,
and its relation decoder's teacher-forced margin), after checking that it counted the same present
and absent pairs.

What this file does not do: change the product, or tune anything (its settings are the issue's).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "experiments")]
import data  # noqa: E402
import grounding  # noqa: E402
import schema as S  # noqa: E402
import tasks  # noqa: E402
import tensors  # noqa: E402
import vision_ceiling  # noqa: E402
from toy import DEFAULT_DATA, ensure_data  # noqa: E402

def presence_pairs(ex: S.RelationExample) -> list[tuple[str, bool]]:
    """(name, in the picture?) for each question of ``ex`` with a grounding target (tasks.present_label):
    the pairs grounding.presence_auc scores."""
    return [(" ".join(q.grounding[0][0]), q.present)
            for q in tasks.relation_examples(ex) if q.present is not None]


class PairSet:
    """The pictures of some MNRE examples, letterboxed, and their asked (picture, name) entries."""

    def __init__(self, examples: list[S.RelationExample], size: int, cast: tuple[str, ...]):
        asked = [(ex, presence_pairs(ex)) for ex in examples if ex.image is not None]
        asked = [(ex, pairs) for ex, pairs in asked if pairs]
        self.cast = cast
        pics = [tensors.load_image(ex.image.path, size) for ex, _ in asked]
        self.x = torch.stack([x for x, _ in pics])                                 # (N, 3, S, S)
        self.cols = [round(W * size / max(W, H)) for _, (W, H) in pics]          # picture columns
        self.y = torch.zeros(len(asked), len(self.cast))                           # (N, C)
        self.mask = torch.zeros(len(asked), len(self.cast), dtype=torch.bool)     # (N, C): asked
        self.pairs = []                                                            # (picture, name, present)
        for i, (_, pairs) in enumerate(asked):
            for name, present in pairs:
                if name not in self.cast:
                    raise ValueError(f"{name!r} is not in the cast {self.cast}")
                c = self.cast.index(name)
                self.y[i, c], self.mask[i, c] = float(present), True
                self.pairs.append((i, c, present))

    def counts(self) -> tuple[int, int]:
        n_present = sum(p for _, _, p in self.pairs)
        return n_present, len(self.pairs) - n_present


def hflip(x: torch.Tensor, cols: list[int], flip: torch.Tensor) -> torch.Tensor:
    """Mirror the flagged letterboxed pictures inside their own width (the padding stays at the
    right, as tensors.hflip does): x (B, 3, S, S), cols[b] the picture's columns."""
    x = x.clone()
    for b in flip.nonzero().flatten().tolist():
        x[b, :, :, :cols[b]] = x[b, :, :, :cols[b]].flip(-1)
    return x


def cnn(n_out: int) -> nn.Sequential:
    """vision_ceiling's classifier up to its global average pool, then one linear layer to n_out."""
    layers = vision_ceiling.classifier()                      # ..., pool, flatten: (B, 128), linear
    return nn.Sequential(*layers[:-1], nn.Linear(layers[-1].in_features, n_out))


@torch.no_grad()
def auc(net: nn.Module, pairs: PairSet) -> float | None:
    net.eval()
    logits = torch.cat([net(pairs.x[i:i + 128]) for i in range(0, len(pairs.x), 128)])  # (N, C)
    net.train()
    pos = [logits[i, c].item() for i, c, p in pairs.pairs if p]
    neg = [logits[i, c].item() for i, c, p in pairs.pairs if not p]
    return grounding.roc_auc(pos, neg)


def train(train_set: PairSet, dev_set: PairSet, steps: int, eval_every: int, seed: int = 0,
          batch_size: int = 32) -> tuple[nn.Module, dict[int, float | None]]:
    """Train the CNN for ``steps``; dev AUC at every eval_every-th step and the last: (net, {step: auc})."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = cnn(len(train_set.cast))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.05)
    net.train()
    order, curve, t0, n = [], {}, time.time(), len(train_set.x)
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order += rng.sample(range(n), n)
        idx, order = order[:batch_size], order[batch_size:]
        x = hflip(train_set.x[idx], [train_set.cols[i] for i in idx], torch.rand(len(idx)) < 0.5)
        mask = train_set.mask[idx]                                                  # (B, C)
        loss = F.binary_cross_entropy_with_logits(net(x)[mask], train_set.y[idx][mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            curve[step] = auc(net, dev_set)
            print(f"step {step:5d} | loss {loss.item():.4f} | dev AUC {grounding.fmt(curve[step])} | "
                  f"{time.time() - t0:.0f} s", flush=True)
    return net.eval(), curve


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--split", default="dev", choices=("dev", "test"))
    p.add_argument("--checkpoint", default="", help="a train.py run directory whose AUC to print beside")
    p.add_argument("--steps", type=int, default=750)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--size", type=int, default=64, help="letterbox size in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root = ensure_data(args.data)
    trained, evaluated = (data.read_mnre(root / "mnre" / f"{split}.txt", root / "mnre" / "images")
                          for split in ("train", args.split))
    cast = tuple(sorted({name for ex in trained + evaluated for name, _ in presence_pairs(ex)}))
    train_set, dev_set = PairSet(trained, args.size, cast), PairSet(evaluated, args.size, cast)
    (tp, ta), (dp, da) = train_set.counts(), dev_set.counts()
    print(f"{len(train_set.x)} train pictures ({tp} present / {ta} absent pairs), {len(dev_set.x)} "
          f"{args.split} pictures ({dp} / {da}), cast of {len(train_set.cast)}")
    t0 = time.time()
    _, curve = train(train_set, dev_set, args.steps, args.eval_every, args.seed)
    out = {"steps": args.steps, "wall_s": round(time.time() - t0, 1), "present": dp, "absent": da,
           "cnn_auc": curve}
    if args.checkpoint:
        import rmpl
        model = rmpl.RMPL.load(args.checkpoint)
        out["model"] = grounding.presence_auc(model, evaluated)
        assert (out["model"]["present"], out["model"]["absent"]) == (dp, da), "not the same pairs"
    cells = [f"CNN after {s} steps {grounding.fmt(a)}" for s, a in curve.items()]
    if "model" in out:
        m = out["model"]
        cells.append(f"model {args.checkpoint}: grounding head {grounding.fmt(m['head_auc'])}, "
                     f"relation decoder {grounding.fmt(m['auc'])}")
    print(f"{args.split} present vs absent AUC ({dp} / {da} pairs): " + " | ".join(cells)
          + f" ({out['wall_s']:.0f} s of training)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
