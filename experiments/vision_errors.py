"""Where image-argument errors come from: a checkpoint's image arguments, broken down.

    python experiments/vision_errors.py --checkpoint runs/stage2 --split dev

1. End to end (rmpl.RMPL.predict, as evaluate.py scores it). Each gold argument (image, type, role,
   box) goes to the first bucket that fits: *matched* (a predicted argument of that type and role at
   IoU >= 0.5: evaluate.py's rule, taken greedily here); *type missed* (no predicted event of that
   type on the image); *box off* (the type and role were predicted, but every such box has IoU <
   0.5); *wrong role* (a box of another role of the predicted event has IoU >= 0.5); *not written*
   (the event was predicted without that role). Predicted arguments that match nothing are counted.
2. Gold event types given (the image_argument pass alone, prompted with each gold event's type):
   the same buckets without *type missed*, the IoU quartiles of the best same-role box per gold
   argument, and the gold boxes' median shorter side at 64 px.
3. End to end again, split by how many gold boxes the (event, role) has: one, or several (a group of
   marchers, two targets). SWiG annotates a plural role with one box around the group (so does the toy
   world's SWiG), M2E2's gold has one box per figure: a model trained on SWiG writes one wide box there.
   Of the boxes off for a one-box role, how many sit on another gold argument's box (IoU >= 0.5: the
   right figures, roles swapped, e.g. a mirrored scene read the wrong way round). Printed first, from the
   gold alone (``--gold-only`` stops there, no checkpoint needed): how many gold arguments are in
   several-box roles, and the F1 a model would reach with every one-box role right and one box per
   several-box role that matches none of its figures (SWiG's group box), or one of them.

What this file does not do: change the product, or tune anything.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import data  # noqa: E402
import evaluate  # noqa: E402
import rmpl  # noqa: E402
import schema as S  # noqa: E402
import tasks  # noqa: E402
from toy import DEFAULT_DATA, ensure_data  # noqa: E402


def box(t: S.Box) -> tuple:
    return (t.x1, t.y1, t.x2, t.y2)


def buckets(gold_events, pred_events) -> tuple[Counter, list[float], int]:
    """Bucket counts of one image's gold arguments, best same-role IoUs, unmatched predictions."""
    out, ious, used = Counter(), [], set()
    for g in gold_events:
        same_type = [p for p in pred_events if p.event_type == g.event_type]
        for a in g.arguments:
            if not same_type:
                out["type missed"] += 1
                continue
            args = [b for p in same_type for b in p.arguments]
            cands = [(evaluate.iou(box(b.target), box(a.target)), id(b)) for b in args
                     if b.role == a.role and id(b) not in used]
            best = max(cands, default=(0.0, None))
            if cands:
                ious.append(best[0])
            others = [evaluate.iou(box(b.target), box(a.target)) for b in args if b.role != a.role]
            if best[0] >= 0.5:
                out["matched"] += 1
                used.add(best[1])
            elif cands:
                out["box off"] += 1
            elif others and max(others) >= 0.5:
                out["wrong role"] += 1
            else:
                out["not written"] += 1
    spurious = sum(1 for p in pred_events for b in p.arguments if id(b) not in used)
    return out, ious, spurious


def by_role_size(images, pred) -> dict:
    """Section 3 of the module docstring: bucket counts for one-box and several-box gold roles, and
    the one-box roles' off boxes that lie on another gold argument."""
    out, swapped = {"one box": Counter(), "several": Counter()}, 0
    for img in images:
        every = [a for g in img.events for a in g.arguments]
        for g in img.events:
            for role, n in Counter(a.role for a in g.arguments).items():
                keep = lambda e: S.ImageEvent(e.event_type, tuple(a for a in e.arguments if a.role == role))
                c, _, _ = buckets([keep(g)], [keep(p) for p in pred.images[img.id]])
                out["one box" if n == 1 else "several"] += c
                if n == 1 and c["box off"]:
                    gold = next(a for a in g.arguments if a.role == role)
                    mine = [a for p in pred.images[img.id] if p.event_type == g.event_type
                            for a in p.arguments if a.role == role]
                    swapped += any(evaluate.iou(box(a.target), box(o.target)) >= 0.5
                                   for a in mine for o in every if o is not gold)
    for name, c in out.items():
        total = sum(c.values())
        print(f"{name}: {total} gold arguments, matched {c['matched']} ({100 * c['matched'] / max(total, 1):.0f}%), "
              + ", ".join(f"{k} {v}" for k, v in c.most_common() if k != "matched"))
    print(f"  one-box roles with the box off on another gold argument's box: {swapped}")
    return {**{k: dict(v) for k, v in out.items()}, "off_on_another_argument": swapped}


def plural_bound(images) -> dict:
    """Section 3's gold-only figures: arguments in several-box roles and the two F1 bounds."""
    sizes = [n for img in images for g in img.events for n in Counter(a.role for a in g.arguments).values()]
    gold, one, plural = sum(sizes), sizes.count(1), sum(n > 1 for n in sizes)
    f1 = lambda matched: 200 * matched / (one + plural + gold)  # predicted: one box per role
    out = {"gold": gold, "in_several_box_roles": gold - one, "several_box_roles": plural,
           "f1_group_boxes": round(f1(one), 1), "f1_one_figure_each": round(f1(one + plural), 1)}
    print(f"gold: {gold} image arguments, {gold - one} of them in {plural} roles with several boxes; F1 with every "
          f"one-box role right and one box per several-box role: {out['f1_group_boxes']} if that box matches "
          f"none (a group box), {out['f1_one_figure_each']} if it matches one figure")
    return out


def given_types(model: rmpl.RMPL, images: list[S.Image]) -> list[tuple[S.Image, S.ImageEvent, S.ImageEvent]]:
    """(image, gold event, the model's event) for each gold event, the image_argument pass prompted
    with the gold event's type (the model's first event of that pass, or none of its arguments)."""
    todo = [(img, e) for img in images for e in img.events]
    prompts = [tasks.image_example("image_argument", img, [], [S.TYPE_TOKENS[e.event_type]])
               for img, e in todo]
    out = []
    for (img, e), o in zip(todo, model.run(prompts)):
        got = [r for r in S.parse(o, size=img.size) if isinstance(r, S.ImageEvent)]
        out.append((img, e, S.ImageEvent(e.event_type, got[0].arguments if got else ())))
    return out


def summarise(name: str, counts: Counter, ious: list[float], spurious: int, n_pred: int) -> dict:
    total = sum(counts.values())
    q = statistics.quantiles(ious, n=4) if len(ious) > 1 else ious
    shares = [f"{k} {v} ({100 * v / total:.0f}%)" for k, v in counts.most_common()]
    print(f"{name}: {total} gold arguments; " + ", ".join(shares))
    print(f"  predicted arguments {n_pred}, unmatched {spurious}; best same-role IoU quartiles "
          + " / ".join(f"{v:.2f}" for v in q)
          + f" (n={len(ious)}, >= 0.5: {sum(v >= 0.5 for v in ious)})")
    return {"counts": dict(counts), "spurious": spurious, "predicted": n_pred, "iou_quartiles": q}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="runs/stage2")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--split", default="dev", choices=("dev", "test"))
    p.add_argument("--gold-only", action="store_true", help="only section 3's gold figures (no checkpoint)")
    args = p.parse_args(argv)
    gold = data.read_m2e2(ensure_data(args.data) / "m2e2" / args.split, images=True)
    bound = plural_bound(list(gold.images.values()))
    if args.gold_only:
        return {"plural_bound": bound}
    model = rmpl.RMPL.load(args.checkpoint)
    images = list(gold.images.values())
    pred = model.predict([], images)
    out = {"plural_bound": bound}
    total, ious, spurious, n_pred = Counter(), [], 0, 0
    for img in images:
        c, v, s = buckets(img.events, pred.images[img.id])
        total, ious, spurious = total + c, ious + v, spurious + s
        n_pred += sum(len(e.arguments) for e in pred.images[img.id])
    out["end_to_end"] = summarise("end to end", total, ious, spurious, n_pred)
    total, ious, spurious, n_pred, sides = Counter(), [], 0, 0, []
    for img, e, got in given_types(model, images):
        c, v, s = buckets([e], [got])
        total, ious, spurious = total + c, ious + v, spurious + s
        n_pred += len(got.arguments)
        sides += [min(a.target.x2 - a.target.x1, a.target.y2 - a.target.y1) * 64 / max(img.size)
                  for a in e.arguments]
    out["gold_types"] = summarise("gold types given", total, ious, spurious, n_pred)
    print(f"  gold box shorter side at 64 px: median {statistics.median(sides):.1f}")
    out["by_role_size"] = by_role_size(images, pred)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
