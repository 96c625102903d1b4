"""The vision ceiling: a plain CNN classifier on the toy pictures, beside the model.

    python experiments/vision_ceiling.py                 # 180 s budget, and runs/stage2's figure
    python experiments/vision_ceiling.py --budget-s 60 --checkpoint ""   # the classifier alone

The classifier: four blocks of two 3x3 convolutions + BatchNorm + ReLU and a 2x2 max-pool (widths
32-64-128-128), global average pool, one linear layer to the 8 event types + "no event"; AdamW lr
2e-3, weight decay 0.05, batch 32, random horizontal flip. It trains on the SWiG train images of
--data, letterboxed by tensors.load_image at --size px, for --budget-s seconds of wall time after
decoding them, then predicts each M2E2 image of dev and test as one event of the argmax type (or
none) and prints the strict image event mention F1 (evaluate.score) beside the model's
(rmpl.RMPL.predict on the same images). It shows how far the model's vision is from what the data
allow in the same kind of CPU time; it is not part of RMPL and writes no predictions anywhere.

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
sys.path.insert(0, str(ROOT))
import data  # noqa: E402
import evaluate  # noqa: E402
import schema as S  # noqa: E402
import tensors  # noqa: E402
from toy import DEFAULT_DATA, ensure_data  # noqa: E402

TYPES = tuple(S.EVENT_TYPES)  # class k < 8: that type; class 8: no event
NONE = len(TYPES)


def classifier(widths=(32, 64, 128, 128)) -> nn.Sequential:
    """Conv blocks (two 3x3 conv + BN + ReLU, then 2x2 max-pool), global average pool, linear."""
    layers, a = [], 3
    for b in widths:
        for c_in in (a, b):
            layers += [nn.Conv2d(c_in, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
        a = b
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(a, NONE + 1))


def label(img: S.Image) -> int:
    return TYPES.index(img.events[0].event_type) if img.events else NONE


def train_classifier(images: list[S.Image], size: int, budget_s: float,
                     seed: int = 0) -> tuple[nn.Module, int]:
    """Train for ``budget_s`` s after decoding the images (at least one step): (net, steps)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    x = torch.stack([tensors.load_image(i.path, size)[0] for i in images])  # (N, 3, S, S)
    y = torch.tensor([label(i) for i in images])                          # (N,)
    net = classifier()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.05)
    net.train()
    steps, order, t0 = 0, [], time.time()
    while steps == 0 or time.time() - t0 < budget_s:
        if len(order) < 32:
            order += rng.sample(range(len(images)), len(images))
        idx, order = order[:32], order[32:]
        batch = x[idx]
        flip = torch.rand(len(idx)) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)  # (B, 3, S, S)
        loss = F.cross_entropy(net(batch), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    return net.eval(), steps


@torch.no_grad()
def classifier_predictions(net: nn.Module, gold: data.M2E2, size: int) -> S.Predictions:
    ids = sorted(gold.images)
    x = torch.stack([tensors.load_image(gold.images[k].path, size)[0] for k in ids])
    classes = net(x).argmax(-1).tolist()
    events = {k: [S.ImageEvent(TYPES[c])] if c != NONE else [] for k, c in zip(ids, classes)}
    return S.Predictions({}, events, [])


def image_mention(gold: data.M2E2, pred: S.Predictions) -> dict:
    c = evaluate.score(gold, pred)["image_mention"]
    return {k: c[k] for k in ("f1", "match", "pred", "gold")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--checkpoint", default="runs/stage2",
                   help="a train.py output dir ('' to skip the model)")
    p.add_argument("--budget-s", type=float, default=180.0,
                   help="wall-time budget of the classifier's training")
    p.add_argument("--size", type=int, default=64, help="letterbox size in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    src = data.read_sources(ensure_data(args.data))
    net, steps = train_classifier(src.swig["train"], args.size, args.budget_s, args.seed)
    model = None
    if args.checkpoint:
        import rmpl
        model = rmpl.RMPL.load(args.checkpoint)
    out = {"budget_s": args.budget_s, "steps": steps, "size": args.size}
    print(f"classifier: {steps} steps in {args.budget_s:.0f} s at {args.size} px; "
          f"strict image event mention F1 (match / pred / gold)")
    for split in ("dev", "test"):
        gold = src.m2e2[split]
        pred = classifier_predictions(net, gold, args.size)
        out[split] = {"classifier": image_mention(gold, pred)}
        if model is not None:
            out[split]["model"] = image_mention(gold, model.predict([], list(gold.images.values())))
        cells = [f"{who} {c['f1']:6.2f} ({c['match']} / {c['pred']} / {c['gold']})"
                 for who, c in out[split].items()]
        print(f"{split:5s} | " + " | ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
