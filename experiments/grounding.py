"""How well a checkpoint grounds names, and what grounded links buy over type-only links.

    python experiments/grounding.py --checkpoint runs/stage1 runs/stage2 --split dev

For each checkpoint, on the MNRE --split (the relation task as trained): precision and recall of
its '/per/misc/present_in' records (a name and its figure; a box counts at IoU >= 0.5, as in the
M2E2 scorer), which shows whether stage 2 made the model forget the relation task; and how well it
tells a name in the picture from a name that is not (``presence_auc``, ROC AUC over present vs
absent names, 0.5 chance, 1.0 a perfect ranking: of the grounding head's logit, and of the relation
decoder's margin logit(present_in) - logit(None) at the first relation of each question whose tail
is a box, teacher-forced on the gold target so far; beside it greedy decoding's accuracy and the
base rate). On the M2E2 --split: the multimedia mention and argument cells (precision, recall, F1)
with grounded links at each of --thresholds and with type-only links, from one extraction (the
links are the only difference). --as-relation-model also scores the relation decoder of a
checkpoint whose last stage lacked the relation task: it asks what the weights still know.

What this file does not do: choose anything; decisions and their figures are in the README.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import astuple
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import data  # noqa: E402
import evaluate  # noqa: E402
import rmpl  # noqa: E402
import schema as S  # noqa: E402
import tasks  # noqa: E402
import tensors  # noqa: E402
import torch  # noqa: E402
from toy import DEFAULT_DATA, ensure_data  # noqa: E402

CELLS = ("multimedia_mention", "multimedia_argument")


def present_in_scores(model: rmpl.RMPL, examples: list[S.RelationExample]) -> dict:
    """Precision and recall of present_in records (name span exact, figure box IoU >= 0.5), one
    relation question per head entity, as trained."""
    asked = [(ex, q) for ex in examples for q in tasks.relation_examples(ex)]
    outputs = model.run([q for _, q in asked])
    tp = n_pred = n_gold = 0
    for (ex, q), out in zip(asked, outputs):
        gold = S.parse(q.target, ex.words, ex.image.size)
        gold = [r for r in gold if isinstance(r, S.Relation) and r.label == tasks.PRESENT_IN]
        pred = [r for r in S.parse(out, ex.words, ex.image.size)
                if isinstance(r, S.Relation) and r.label == tasks.PRESENT_IN]
        n_gold, n_pred = n_gold + len(gold), n_pred + len(pred)
        tp += sum(any(p.head == g.head and isinstance(p.tail, S.Box)
                      and evaluate.iou(astuple(p.tail), astuple(g.tail)) >= 0.5
                      for p in pred) for g in gold)
    return {"precision": 100 * tp / max(n_pred, 1), "recall": 100 * tp / max(n_gold, 1)}


def decision_position(target: list[str]) -> int | None:
    """Where a relation target first says whether its head is in the picture: the label of its
    first relation whose tail is a box (None: it places the head against no figure)."""
    labels, locations = set(S.REL_TOKENS.values()), set(S.LOC_TOKENS)
    for i, token in enumerate(target):
        if token in labels and target[target.index(S.TAIL, i) + 1] in locations:
            return i
    return None


def roc_auc(pos: list[float], neg: list[float]) -> float | None:
    """The chance that a positive scores above a negative (ties count half); None without both."""
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    return sum(pairs) / len(pairs) if pairs else None


def fmt(auc: float | None) -> str:
    return "n/a" if auc is None else f"{auc:.3f}"


@torch.no_grad()
def presence_auc(model: rmpl.RMPL, examples: list[S.RelationExample]) -> dict:
    """Present vs absent names, teacher-forced (module docstring): AUC, and the accuracy of the
    greedy choice between the two labels beside the base rate."""
    yes = S.REL_TOKENS[tasks.PRESENT_IN]
    present, absent = (model.tok.encode([token])[0] for token in (yes, S.REL_TOKENS["None"]))
    asked = [(q, decision_position(q.target), q.present)  # (question, where, present?)
             for ex in examples for q in tasks.relation_examples(ex) if q.present is not None]
    cfg, scores, heads, device = model.net.cfg, [], [], next(model.net.parameters()).device
    model.net.eval()
    for i in range(0, len(asked), model.batch_size):
        part = asked[i:i + model.batch_size]
        enc = [tensors.encode_example(q, model.tok, cfg.image_size, cfg.max_text_len, cfg.max_target_len,
                                      model.images) for q, _, _ in part]
        batch = {k: v.to(device) for k, v in tensors.collate(enc, model.tok.pad_id).items()}
        logits, _ = model.net(batch)
        scores += [(logits[k, at, present] - logits[k, at, absent]).item() for k, (_, at, _) in enumerate(part)]
        heads += model.net.presence(batch)[:, 0].tolist()
    pos = [s for s, (_, _, yes) in zip(scores, asked) if yes]
    neg = [s for s, (_, _, yes) in zip(scores, asked) if not yes]
    n = max(len(asked), 1)
    return {"auc": roc_auc(pos, neg), "present": len(pos), "absent": len(neg),
            "head_auc": roc_auc([h for h, (_, _, yes) in zip(heads, asked) if yes],
                                [h for h, (_, _, yes) in zip(heads, asked) if not yes]),
            "greedy_accuracy": 100 * (sum(s > 0 for s in pos) + sum(s <= 0 for s in neg)) / n,
            "base_rate": 100 * max(len(pos), len(neg)) / n}


def link_scores(model: rmpl.RMPL, gold: data.M2E2, thresholds=(rmpl.GROUNDING_THRESHOLD,)) -> dict:
    """The multimedia cells under each link rule (the grounded one at each of ``thresholds``), from
    one extraction."""
    sentences = list(gold.sentences.values())
    images = [i for i in gold.images.values() if i.path is not None]
    text, pics = model._text_events(sentences), model._image_events(images)
    out = {}
    for rule, threshold in [("type", None), *(("grounded", t) for t in thresholds)]:
        model.links, model.threshold = rule, threshold
        pred = S.Predictions(text, pics, model._links(sentences, images, text, pics))
        cells = evaluate.score(gold, pred)
        name = rule if threshold is None else f"grounded@{threshold:g}"
        out[name] = {c: {k: cells[c][k] for k in ("p", "r", "f1")} for c in CELLS}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", nargs="+", required=True, help="train.py run directories")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--split", default="dev", choices=("dev", "test"))
    p.add_argument("--as-relation-model", action="store_true",
                   help="run the relation task even when the checkpoint's tasks lack it")
    p.add_argument("--thresholds", type=float, nargs="+", default=[rmpl.GROUNDING_THRESHOLD],
                   help="grounded links: the grounding head's thresholds to score (choose on dev)")
    args = p.parse_args(argv)
    root = ensure_data(args.data)
    mnre = data.read_mnre(root / "mnre" / f"{args.split}.txt", root / "mnre" / "images")
    gold = data.read_m2e2(root / "m2e2" / args.split, images=True)
    results = {}
    for ckpt in args.checkpoint:
        model = rmpl.RMPL.load(ckpt, links="type")
        if args.as_relation_model and "relation" not in model.tasks:
            model.tasks += ("relation",)
        decodes, grounds = "relation" in model.tasks, bool(model.net.grounding.targets_seen)
        res = {"present_in": present_in_scores(model, mnre) if decodes else None,
               "presence": presence_auc(model, mnre),
               "links": link_scores(model, gold, args.thresholds) if grounds else None}
        results[ckpt] = res
        print(f"{ckpt} ({args.split}):")
        if decodes:
            pi = res["present_in"]
            print(f"  MNRE present_in: precision {pi['precision']:.1f} recall {pi['recall']:.1f}")
        pr = res["presence"]
        print(f"  MNRE present vs absent ({pr['present']} / {pr['absent']} names): grounding head "
              f"AUC {fmt(pr['head_auc'])}; relation decoder AUC {fmt(pr['auc'])}, greedy "
              f"{pr['greedy_accuracy']:.1f}% right (base rate {pr['base_rate']:.1f}%)")
        if not grounds:
            print("  its grounding head was never trained: no grounded links")
            continue
        for rule, cells in res["links"].items():
            print(f"  {rule:13s} links: " + " | ".join(
                f"{c.replace('_', ' ')} P {v['p']:.1f} R {v['r']:.1f} "
                f"F1 {v['f1']:.1f}" for c, v in cells.items()))
    return results


if __name__ == "__main__":
    main()
