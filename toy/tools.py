"""Tools for looking at a toy world (or any --data DIR): a statistics table, the keyword baseline,
and a document viewer::

    python -m toy.tools stats data/toy                                   # a markdown table
    python -m toy.tools baseline data/toy --split test --pred kw.jsonl   # keyword baseline
    python -m toy.tools draw data/toy --doc toy-test-003 --png doc.png   # [--pred FILE]

Everything is read back through data.py's readers (and predictions through evaluate.py's loader), so
the tools see exactly what training and the scorer see. The keyword baseline knows the generator's
trigger lists (text.py): it shows how far words alone go, ambiguous words included.

On the command line a bad input (a missing directory or file, an unknown document, a prediction file
the scorer refuses) is one `error: ...` line and exit status 2, never a traceback.

What this file does not do: generate a world (world.py, `python -m toy`), score (evaluate.py), or
learn anything.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections import Counter
from pathlib import Path

from PIL import Image as PILImage, ImageDraw

import data
import evaluate
from schema import EVENT_TYPES, IMAGE_ROLES

from .pictures import CAST, INK
from .text import ANON_NOUNS, GROUPS, ORGS, PLACES, POLICE_WORDS, TEMPLATES


def _order(x):  # sentences and images in document order: by doc id, then by their number in it
    return x.doc_id, int(x.id.rsplit("_", 1)[1])


def _directory(path) -> Path:
    """`path` if it is a directory; FileNotFoundError naming it otherwise."""
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such directory")
    return d


def _m2e2(root, split: str, images: bool = False) -> data.M2E2:
    """The M2E2 split of a data directory (DIR/m2e2/<split>), read by data.py."""
    _directory(root)
    d = Path(root) / "m2e2" / split
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such directory (expected the five M2E2 files of {split})")
    return data.read_m2e2(d, images=images)


# ============================================================================= statistics
def stats(root) -> str:
    """A markdown table of what a --data DIR holds (read back through data.py's readers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the readers report what they drop; a table needs no note
        src = data.read_sources(_directory(root))
    types = [t.split(":")[1].split("-")[0] for t in EVENT_TYPES]
    head = ["source", "split", "items", "with event", "events", "args", *types, "links"]
    rows = []

    def row(source, split, items, extra=""):
        events = [e for x in items for e in x.events]
        per = Counter(e.event_type for e in events)
        with_event = sum(1 for x in items if x.events)
        args = sum(len(e.arguments) for e in events)
        rows.append([source, split, f"{len(items)}{extra}", with_event, len(events), args,
                     *(per[t] for t in EVENT_TYPES)])

    for source in ("ace", "swig"):
        for split, xs in getattr(src, source).items():
            row(source, split, xs)
    for split, m in src.m2e2.items():
        docs = len({s.doc_id for s in m.sentences.values()})
        row("m2e2 text", split, list(m.sentences.values()), f" ({docs} docs)")
        rows[-1].append(len(m.links))
        row("m2e2 image", split, list(m.images.values()))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r + [""] * (len(head) - len(r))) + " |")
    for split, xs in src.mnre.items():
        labels = Counter(r.label for x in xs for r in x.relations)
        counts = ", ".join(f"{k.rsplit('/', 1)[-1]} {v}" for k, v in sorted(labels.items()))
        lines.append(f"\nmnre {split}: {sum(labels.values())} relations in {len(xs)} "
                     f"sentences with their images; {counts}")
    return "\n".join(lines)


def same_type_pairs(m2e2) -> tuple[int, int]:
    """(linked, all) over (sentence, image) pairs of one document whose gold events share a type."""
    links = {(x.sentence_id, x.image_id, x.event_type) for x in m2e2.links}
    pairs = []
    for s in m2e2.sentences.values():
        for iid in s.images:
            in_image = {e.event_type for e in m2e2.images[iid].events}
            shared = {e.event_type for e in s.events} & in_image
            pairs += [(s.id, iid, t) for t in shared]
    return sum(p in links for p in pairs), len(pairs)


# ============================================================================= the keyword baseline
# Every trigger phrase of the templates, longest first, so "opened fire on" wins over "fire".
_TRIGGERS = {tuple(m[1:-1].lower().split()): t for t, ts in TEMPLATES.items() for tmpl in ts
             for m in re.findall(r"\[[^\]]+\]", tmpl)}
TRIGGER_WORDS = sorted(_TRIGGERS.items(), key=lambda x: -len(x[0]))
PERSON_WORDS = {w.lower() for w in (*CAST, *ANON_NOUNS, *GROUPS, *(p[-1] for p in POLICE_WORDS),
                                     *(o[-1] for o in ORGS))}
PLACE_WORDS = {p.lower() for p in PLACES}
# The argument rule per type: the roles of (the nearest person word before the trigger, the nearest
# after it, the first place after it); None: that word is no argument.
RULE = {"Conflict:Attack": ("Attacker", "Target", "Place"),
        "Conflict:Demonstrate": ("Entity", "Police", "Place"),
        "Contact:Meet": ("Entity", "Entity", "Place"),
        "Contact:Phone-Write": ("Entity", "Entity", "Place"),
        "Justice:Arrest-Jail": ("Agent", "Person", "Place"),
        "Life:Die": ("Victim", None, "Place"),
        "Movement:Transport": ("Artifact", None, "Destination"),
        "Transaction:Transfer-Money": ("Giver", "Recipient", None)}


def keyword_events(words) -> list[dict]:
    """Every trigger phrase of the templates found in the sentence (longest first, ambiguous words
    included), with arguments by the nearest-word rule; in the prediction format
    (docs/predictions.md)."""
    low, events, taken = [w.lower() for w in words], [], set()
    for phrase, t in TRIGGER_WORDS:
        for i in range(len(low) - len(phrase) + 1):
            end = i + len(phrase)
            if tuple(low[i:end]) != phrase or taken & set(range(i, end)):
                continue
            taken |= set(range(i, end))
            left = [j for j in range(i) if low[j] in PERSON_WORDS][-1:]
            right = [j for j in range(end, len(low)) if low[j] in PERSON_WORDS][:1]
            places = [j for j in range(end, len(low)) if low[j] in PLACE_WORDS][:1]
            args = [{"role": role, "start": js[0], "end": js[0] + 1}
                    for role, js in zip(RULE[t], (left, right, places)) if role and js]
            events.append({"event_type": t, "trigger": {"start": i, "end": end}, "arguments": args})
    return sorted(events, key=lambda e: e["trigger"]["start"])


def baseline(root, split: str, pred_path) -> int:
    """Keyword baseline on m2e2/<split>: text by keywords; each image of a document gets the type of
    the document's first keyword event (no boxes: nothing it can see) and is linked to the sentences
    with that type. Writes JSON Lines; returns the number of lines."""
    gold = _m2e2(root, split)
    sents = sorted(gold.sentences.values(), key=_order)
    found = {s.id: keyword_events(s.words) for s in sents}
    lines, first = [], {}
    for s in sents:
        lines.append({"sentence_id": s.id, "events": found[s.id]})
        for e in found[s.id]:
            first.setdefault(s.doc_id, e["event_type"])
    for im in sorted(gold.images.values(), key=_order):
        t = first.get(im.doc_id)
        events = [{"event_type": t, "arguments": []}] if t else []
        lines.append({"image_id": im.id, "events": events})
        lines += [{"sentence_id": s.id, "image_id": im.id, "event_type": t} for s in sents
                  if s.doc_id == im.doc_id and t in {e["event_type"] for e in found[s.id]}]
    text = "".join(json.dumps(x, sort_keys=True) + "\n" for x in lines)
    Path(pred_path).write_text(text, encoding="utf-8")
    return len(lines)


# ============================================================================= the document viewer
ROLE_COLOURS = ((230, 0, 0), (0, 90, 255), (0, 160, 0), (255, 140, 0), (170, 0, 200), (0, 170, 170))


def _document(root, split: str, doc: str, pred_path=None):
    """A document's sentences and images in order, and the events and links to show: the gold, or
    the predictions of `pred_path` (checked by evaluate.py's loader)."""
    gold = _m2e2(root, split, images=True)
    sents = sorted((s for s in gold.sentences.values() if s.doc_id == doc), key=_order)
    ims = sorted((i for i in gold.images.values() if i.doc_id == doc), key=_order)
    if not sents and not ims:
        docs = sorted({s.doc_id for s in gold.sentences.values()})
        known = f" (documents: {docs[0]} .. {docs[-1]})" if docs else ""
        raise ValueError(f"{root}/m2e2/{split}: no document {doc!r}{known}")
    if not pred_path:
        s_events, i_events = {s.id: s.events for s in sents}, {i.id: i.events for i in ims}
        return sents, ims, s_events, i_events, gold.links
    if not Path(pred_path).is_file():
        raise FileNotFoundError(f"{pred_path}: no such prediction file")
    pred = evaluate.load_predictions(pred_path, gold)
    s_events = {s.id: pred.sentences.get(s.id, ()) for s in sents}
    i_events = {i.id: pred.images.get(i.id, ()) for i in ims}
    return sents, ims, s_events, i_events, pred.links


def _tile(im, events, scale: int):
    """One image enlarged `scale` times, its events' argument boxes drawn with role labels."""
    tile = PILImage.open(im.path).convert("RGB")
    tile = tile.resize((tile.width * scale, tile.height * scale), PILImage.NEAREST)
    d = ImageDraw.Draw(tile)
    d.text((3, 2), f"{im.id}: {', '.join(e.event_type for e in events) or 'no event'}", fill=INK)
    for e in events:
        roles = IMAGE_ROLES.get(e.event_type, ())
        for a in e.arguments:
            k = roles.index(a.role) if a.role in roles else len(roles)  # an off-type role shows too
            c = ROLE_COLOURS[k % len(ROLE_COLOURS)]
            # a predicted box may reach past the picture: drawn clipped to it
            xs = [min(max(v * scale, 0), tile.width) for v in (a.target.x1, a.target.x2)]
            ys = [min(max(v * scale, 0), tile.height) for v in (a.target.y1, a.target.y2)]
            d.rectangle([xs[0], ys[0], xs[1], ys[1]], outline=c, width=2)
            d.text((xs[0] + 2, ys[1] - 12), a.role, fill=c)
    return tile


def _caption(sents, s_events, links, image_ids) -> list[str]:
    """Text lines under the pictures: each event with its trigger and arguments, then the links."""
    def words(s, span):
        return " ".join(s.words[span.start:span.end])

    text = []
    for s in sents:
        for e in s_events[s.id]:
            args = "; ".join(f"{a.role}={words(s, a.target)}" for a in e.arguments)
            text.append(f"{s.id}: {e.event_type} [{words(s, e.trigger)}] {args}")
            text.append("    " + " ".join(s.words))
    for x in links:
        if x.image_id in image_ids:
            text.append(f"link {x.sentence_id} - {x.image_id} ({x.event_type})")
    return text


def draw_doc(root, split: str, doc: str, png, pred_path=None, scale: int = 3) -> Path:
    """Draw a document's images side by side (enlarged) with gold or predicted boxes and role
    labels, and its event sentences underneath, so a person can see what the model sees."""
    sents, ims, s_events, i_events, links = _document(root, split, doc, pred_path)
    tiles = [_tile(im, i_events[im.id], scale) for im in ims]
    text = _caption(sents, s_events, links, i_events)
    top = max([t.height for t in tiles] + [0])
    width = max([sum(t.width + 8 for t in tiles), 200] + [6 * len(line) + 10 for line in text])
    canvas = PILImage.new("RGB", (width, top + 14 * len(text) + 24), (255, 255, 255))
    x = 4
    for t in tiles:
        canvas.paste(t, (x, 4))
        x += t.width + 8
    d = ImageDraw.Draw(canvas)
    title = f"{split} {doc} ({'predicted' if pred_path else 'gold'})"
    d.text((4, top + 10), title, fill=(0, 0, 160))
    for k, line in enumerate(text):
        d.text((4, top + 26 + 14 * k), line, fill=INK)
    canvas.save(png)
    return Path(png)


# ============================================================================= command line
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m toy.tools",
                                description="Describe a data directory, run the keyword baseline "
                                            "on its M2E2 split, or draw one of its documents.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stats", help="print a markdown table of what DIR holds")
    s.add_argument("dir", metavar="DIR",
                   help="a data directory (layout: docs/real_data.md), e.g. data/toy")
    b = sub.add_parser("baseline", help="keyword baseline on DIR/m2e2/SPLIT, written as JSON Lines")
    b.add_argument("dir", metavar="DIR", help="a data directory with m2e2/SPLIT")
    b.add_argument("--split", default="test", choices=("dev", "test"))
    b.add_argument("--pred", required=True, metavar="OUT.jsonl", help="where the predictions go")
    d = sub.add_parser("draw", help="draw a document of DIR/m2e2/SPLIT: gold or predicted events")
    d.add_argument("dir", metavar="DIR", help="a data directory with m2e2/SPLIT (and its images)")
    d.add_argument("--split", default="test", choices=("dev", "test"))
    d.add_argument("--doc", required=True, help="document id, e.g. toy-test-003")
    d.add_argument("--png", required=True, help="the picture to write")
    d.add_argument("--pred", metavar="FILE", help="draw these predictions (JSON Lines), not gold")
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if a.command == "stats":
                message = stats(a.dir)
            elif a.command == "baseline":
                message = f"wrote {baseline(a.dir, a.split, a.pred)} lines to {a.pred}"
            else:
                message = f"drew {draw_doc(a.dir, a.split, a.doc, a.png, a.pred)}"
    except (OSError, ValueError) as e:  # DataError, PredictionError, a missing file: named in e
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(message)


if __name__ == "__main__":
    evaluate.run_command(main)
