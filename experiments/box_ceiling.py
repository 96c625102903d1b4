"""The box ceiling: a plain CNN that places an event role's box from the picture, given type and role.

    python experiments/box_ceiling.py                                # the CNN alone, 1,500 steps
    python experiments/box_ceiling.py --checkpoint runs/stage2       # and the model, same arguments

The CNN: vision_ceiling.py's convolution blocks (two 3x3 convolutions + BatchNorm + ReLU and a 2x2
max-pool, widths 32-64-128-128) without the global pool, so the 4x4 map at 64 px keeps where things
are; flattened, concatenated with a learned embedding of the (event type, role) asked, then a hidden
layer of 256 and 4 outputs: the box's centre, width and height as a share of the letterboxed frame.
L1 loss on the corners in that frame; AdamW lr 2e-3, weight decay 0.05, batch 32 (picture, argument)
entries, pictures mirrored with their boxes inside their own width with probability 1/2. It trains on
the SWiG train images' arguments and is scored on the M2E2 --split's gold image arguments, given each
gold event's type and role: one box per (event, role), matched to the gold boxes as
vision_errors.buckets matches the model's (IoU >= 0.5, each box used once). With --checkpoint, the
model's shares from the same function: given the gold types (the image_argument pass alone) and end to
end (rmpl.RMPL.predict).

What this file does not do: change the product, or tune anything.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "experiments")]
import data  # noqa: E402
import schema as S  # noqa: E402
import tensors  # noqa: E402
import vision_ceiling  # noqa: E402
import vision_errors  # noqa: E402
from grounding_ceiling import hflip  # noqa: E402
from toy import DEFAULT_DATA, ensure_data  # noqa: E402


class ArgumentSet:
    """Letterboxed pictures and their image arguments as (picture, (type, role) key, corners in [0, 1]
    of the letterbox frame)."""

    def __init__(self, images: list[S.Image], size: int, keys: tuple | None = None):
        images = [img for img in images if img.events]
        self.keys = keys or tuple(sorted({(e.event_type, a.role) for img in images
                                          for e in img.events for a in e.arguments}))
        pics = [tensors.load_image(img.path, size) for img in images]
        self.x = torch.stack([x for x, _ in pics])                          # (N, 3, S, S)
        self.cols = [round(W * size / max(W, H)) for _, (W, H) in pics]
        self.width = [W / max(W, H) for _, (W, H) in pics]                 # picture width in frames
        self.images, self.entries = images, []                              # (picture, key, corners)
        for i, img in enumerate(images):
            scale = max(img.size)
            for e in img.events:
                for a in e.arguments:
                    if (e.event_type, a.role) in self.keys:
                        b = a.target
                        self.entries.append((i, self.keys.index((e.event_type, a.role)),
                                             (b.x1 / scale, b.y1 / scale, b.x2 / scale, b.y2 / scale)))


class BoxNet(nn.Module):
    def __init__(self, n_keys: int, size: int, dim: int = 32, hidden: int = 256):
        super().__init__()
        self.convs = vision_ceiling.classifier()[:-3]       # without pool, flatten, linear
        width = self.convs[-3].num_features                  # the last BatchNorm's channels
        self.key = nn.Embedding(n_keys, dim)
        self.head = nn.Sequential(nn.Linear(width * (size // 16) ** 2 + dim, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 4))

    def forward(self, x: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S), (B,) -> (B, 4) corners x1 y1 x2 y2 in [0, 1] of the letterbox frame."""
        f = self.convs(x).flatten(1)                                        # (B, C * S/16 * S/16)
        cx, cy, w, h = self.head(torch.cat([f, self.key(key)], -1)).sigmoid().unbind(-1)
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)  # (B, 4)


@torch.no_grad()
def cnn_events(net: BoxNet, gold: ArgumentSet) -> list[tuple[S.ImageEvent, S.ImageEvent]]:
    """(gold event, the CNN's event: one box per role of the gold event, in pixels) per gold event;
    a (type, role) the CNN never saw gets no box."""
    out = []
    for i, img in enumerate(gold.images):
        scale, (W, H) = max(img.size), img.size
        for e in img.events:
            roles = [r for r in dict.fromkeys(a.role for a in e.arguments) if (e.event_type, r) in gold.keys]
            keys = torch.tensor([gold.keys.index((e.event_type, r)) for r in roles], dtype=torch.long)
            boxes = net(gold.x[[i] * len(roles)], keys).tolist() if roles else []
            args = tuple(S.Argument(r, S.Box(max(b[0] * scale, 0), max(b[1] * scale, 0),
                                             min(b[2] * scale, W), min(b[3] * scale, H)))
                         for r, b in zip(roles, boxes))
            out.append((e, S.ImageEvent(e.event_type, args)))
    return out


def matched_share(pairs) -> dict:
    """vision_errors.buckets over (gold event, predicted events) pairs: the share of gold arguments
    matched (IoU >= 0.5, each predicted box used once), and the buckets."""
    counts = Counter()
    for gold_events, pred_events in pairs:
        counts += vision_errors.buckets(gold_events, pred_events)[0]
    total = sum(counts.values())
    return {"matched": 100 * counts["matched"] / max(total, 1), "gold": total, "counts": dict(counts)}


def train(args_set: ArgumentSet, gold: ArgumentSet, size: int, steps: int, eval_every: int,
          seed: int = 0, batch_size: int = 32) -> tuple[BoxNet, dict[int, dict]]:
    """Train for ``steps``; the gold arguments' matched share at every eval_every-th step and the
    last: (net, {step: matched_share})."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = BoxNet(len(args_set.keys), size)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.05)
    net.train()
    order, n, t0, curve = [], len(args_set.entries), time.time(), {}
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order += rng.sample(range(n), n)
        batch, order = [args_set.entries[k] for k in order[:batch_size]], order[batch_size:]
        pics = [i for i, _, _ in batch]
        flip = torch.rand(len(batch)) < 0.5
        x = hflip(args_set.x[pics], [args_set.cols[i] for i in pics], flip)
        y = torch.tensor([c for _, _, c in batch])                           # (B, 4)
        w = torch.tensor([args_set.width[i] for i in pics])                  # (B,)
        y = torch.where(flip[:, None], torch.stack([w - y[:, 2], y[:, 1], w - y[:, 0], y[:, 3]], -1), y)
        loss = F.l1_loss(net(x, torch.tensor([k for _, k, _ in batch])), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            curve[step] = matched_share(([e], [p]) for e, p in cnn_events(net.eval(), gold))
            net.train()
            print(f"step {step:5d} | L1 {loss.item():.4f} | matched {curve[step]['matched']:.1f}% | "
                  f"{time.time() - t0:.0f} s", flush=True)
    return net.eval(), curve


def model_shares(model, images: list[S.Image]) -> dict:
    pred = model.predict([], images)
    return {"gold_types": matched_share(([e], [p]) for _, e, p in vision_errors.given_types(model, images)),
            "end_to_end": matched_share((img.events, pred.images[img.id]) for img in images)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--split", default="dev", choices=("dev", "test"))
    p.add_argument("--checkpoint", default="", help="a train.py run directory whose shares to print beside")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=750)
    p.add_argument("--size", type=int, default=64, help="letterbox size in pixels (a multiple of 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root = ensure_data(args.data)
    swig = data.read_swig(root / "swig" / "train.json", root / "swig" / "images",
                          root / "swig" / "ace_sr_mapping.txt")
    train_set = ArgumentSet(swig, args.size)
    gold = data.read_m2e2(root / "m2e2" / args.split, images=True)
    images = [img for img in gold.images.values() if img.path is not None]
    gold_set = ArgumentSet(images, args.size, train_set.keys)
    print(f"{len(train_set.entries)} SWiG train arguments on {len(train_set.x)} pictures, "
          f"{len(train_set.keys)} (type, role) keys")
    t0 = time.time()
    _, curve = train(train_set, gold_set, args.size, args.steps, args.eval_every, args.seed)
    out = {"steps": args.steps, "wall_s": round(time.time() - t0, 1), "cnn": curve[args.steps],
           "curve": {step: share["matched"] for step, share in curve.items()}}
    if args.checkpoint:
        import rmpl
        out["model"] = model_shares(rmpl.RMPL.load(args.checkpoint), images)
    cells = [f"CNN after {step} steps {share:.1f}%" for step, share in out["curve"].items()]
    if "model" in out:
        cells += [f"model given the types {out['model']['gold_types']['matched']:.1f}%",
                  f"model end to end {out['model']['end_to_end']['matched']:.1f}%"]
    print(f"{args.split} gold image arguments placed at IoU >= 0.5 (of {out['cnn']['gold']}): "
          + " | ".join(cells) + f" ({out['wall_s']:.0f} s of training)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
