r"""Evaluate: score M2E2 predictions under one stated protocol.

The published M2E2 scorers disagree, so this file implements one protocol,
``strict``, and the four relaxations peers use, as the fields of a ``Protocol``
value that can be turned on one at a time or together:

    keep_events       text scored only on sentences that have a gold event (WASE)
    trigger_start     triggers compared by their first token only (UniCL, CAMEL)
    gold_images_only  images scored only on the 391 gold event images (X-MTL)
    unattached_args   text argument key without the trigger (TextEE Arg-C, MMUTF)

Every cell is micro P / R / F1 over sets of tuples, always with its
match / pred / gold counts:

    text mention        (sentence_id, trigger_start, trigger_end, event_type)
    text argument       (sentence_id, trigger_start, trigger_end, event_type,
                         arg_start, arg_end, role)
    image mention       (image_id, event_type)
    image argument      (event_type, role, box) matched one-to-one to gold boxes at IoU >= 0.5
    multimedia mention  (sentence_id, image_id, event_type)
    multimedia argument text arguments of the linked sentences + boxes of the linked images

    python evaluate.py --gold ../shared/data/m2e2 --pred predictions.jsonl \
        [--trigger-start ...] [--json]

The filtering relaxations (keep_events, gold_images_only) change the text and
image cells only; the key relaxations (trigger_start, unattached_args) also
change the text part of the multimedia argument key.

What this file does not do: read the gold files (``data.read_m2e2``), run a
model (``python rmpl.py`` extracts, then scores with this file), import torch,
or convert peer output formats (tests/test_conformance.py does that).
"""
from __future__ import annotations

import argparse
import codecs
import json
import math
import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

from data import M2E2, gc_paused, parse_json, read_m2e2, strip_ext
from schema import (EVENT_TYPES, IMAGE_ROLES, ROLES, TEXT_ROLES, Argument, Box, ImageEvent, Link,
                    Predictions, Span, TextEvent)

CELLS = ("text_mention", "text_argument", "image_mention", "image_argument", "multimedia_mention",
         "multimedia_argument")


@dataclass(frozen=True)
class Protocol:
    """What is compared: ``Protocol()`` is the strict protocol; each field turns on one relaxation
    that published scorers use (module docstring), alone or together."""
    keep_events: bool = field(default=False, metadata={
        "help": "score text only on sentences that have a gold event (WASE)"})
    trigger_start: bool = field(default=False, metadata={
        "help": "compare triggers by their first word only (UniCL, CAMEL)"})
    gold_images_only: bool = field(default=False, metadata={
        "help": "score images only on those with a gold event (X-MTL)"})
    unattached_args: bool = field(default=False, metadata={
        "help": "text argument key without the trigger (TextEE Arg-C, MMUTF)"})

    def __str__(self) -> str:
        on = [f.name.replace("_", "-") for f in fields(self) if getattr(self, f.name)]
        return " + ".join(["strict", *on])


STRICT = Protocol()


class PredictionError(ValueError):
    """A prediction file that cannot be scored: names the file, the line and what is wrong."""


# ----------------------------------------------------------------------------- reading predictions
_NAMES = {str: "a string", list: "a list", dict: "a JSON object"}
LINE_KINDS = ("a sentence line has 'sentence_id' and 'events', an image line 'image_id' and "
              "'events', a link line 'sentence_id', 'image_id' and 'event_type'")


def _shown(value) -> str:
    """repr(value) cut to 80 characters: an error about a huge value stays one short line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _get(obj: dict, key: str, kind, what: str, fail, optional: bool = False):
    """obj[key], which must be of `kind`; an optional key that is absent or null gives kind()."""
    if optional and obj.get(key) is None:
        return kind()
    if key not in obj:
        fail(f"missing key {key!r} in {what}")
    value = obj[key]
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        fail(f"{what}: {key!r} must be an integer, got {_shown(value)}")
    if kind is not int and not isinstance(value, kind):
        fail(f"{what}: {key!r} must be {_NAMES[kind]}, got {_shown(value)}")
    return value


def _event_type(obj: dict, what: str, fail) -> str:
    t = _get(obj, "event_type", str, what, fail)
    if t not in EVENT_TYPES:
        fail(f"{what}: unknown event type {_shown(t)} (expected one of {', '.join(EVENT_TYPES)})")
    return t


def _span(obj: dict, what: str, length: int | None, fail) -> Span:
    start, end = _get(obj, "start", int, what, fail), _get(obj, "end", int, what, fail)
    if not 0 <= start < end or (length is not None and end > length):
        limit = f" <= {length} (the sentence length)" if length is not None else ""
        fail(f"{what}: offsets must satisfy 0 <= start < end{limit}, got start={start}, end={end}")
    return Span(start, end)


def _finite(v) -> bool:
    """A finite JSON number: not a bool, not NaN or infinity, not an int too large for a float."""
    try:
        return type(v) in (int, float) and math.isfinite(v)
    except OverflowError:
        return False


def _box(value, what: str, fail) -> Box:
    if not (isinstance(value, list) and len(value) == 4 and all(map(_finite, value))):
        fail(f"{what}: 'bbox' must be four finite numbers [x1, y1, x2, y2], got {_shown(value)}")
    if value[2] < value[0] or value[3] < value[1]:
        fail(f"{what}: 'bbox' must have x1 <= x2 and y1 <= y2, got {value!r}")
    return Box(*map(float, value))


def _events(obj: dict, length: int | None, image: bool, fail) -> list:
    events = []
    for k, e in enumerate(_get(obj, "events", list, "the line", fail)):
        what = f"event {k}"
        if not isinstance(e, dict):
            fail(f"{what} must be a JSON object, got {_shown(e)}")
        t = _event_type(e, what, fail)
        roles = (IMAGE_ROLES if image else TEXT_ROLES)[t]
        args = []
        # mention-only systems may omit arguments; null reads as omitted
        for m, a in enumerate(_get(e, "arguments", list, what, fail, optional=True)):
            awhat = f"{what} argument {m}"
            if not isinstance(a, dict):
                fail(f"{awhat} must be a JSON object, got {_shown(a)}")
            role = _get(a, "role", str, awhat, fail)
            # a role of another type can only be a false positive; a typo is an error
            if role not in ROLES:
                fail(f"{awhat}: unknown role {_shown(role)} "
                     f"(expected one of {', '.join(roles)} for {t})")
            target = _box(a.get("bbox"), awhat, fail) if image else _span(a, awhat, length, fail)
            args.append(Argument(role, target))
        if image:
            events.append(ImageEvent(t, tuple(args)))
        else:
            trigger = _span(_get(e, "trigger", dict, what, fail), f"{what} trigger", length, fail)
            events.append(TextEvent(t, trigger, tuple(args)))
    return events


def _add_line(obj: dict, pred: Predictions, gold: M2E2, fail) -> None:
    """One line's JSON object into ``pred``: a link, or events of a sentence or an image."""
    if "sentence_id" in obj and "image_id" in obj:  # a multimedia link
        if "events" in obj:  # most likely events written under a link's ids: never drop them
            fail(f"a line with 'sentence_id' and 'image_id' is a link, which carries 'event_type', "
                 f"not 'events' ({LINE_KINDS})")
        sid = _get(obj, "sentence_id", str, "the link", fail)
        iid = strip_ext(_get(obj, "image_id", str, "the link", fail))
        pred.links.append(Link(sid, iid, _event_type(obj, "the link", fail)))
    elif "sentence_id" in obj:
        sid = _get(obj, "sentence_id", str, "the line", fail)
        length = len(gold.sentences[sid].words) if sid in gold.sentences else None
        pred.sentences.setdefault(sid, []).extend(_events(obj, length, False, fail))
    elif "image_id" in obj:
        iid = strip_ext(_get(obj, "image_id", str, "the line", fail))
        pred.images.setdefault(iid, []).extend(_events(obj, None, True, fail))
    else:
        fail(f"missing key 'sentence_id' or 'image_id' ({LINE_KINDS})")


@gc_paused
def load_predictions(path: str | Path, gold: M2E2) -> Predictions:
    """Read a JSON Lines prediction file (format: docs/predictions.md); several
    lines for one id merge.

    Each non-blank line is one JSON object of one of three kinds: a sentence line has
    'sentence_id' and 'events', an image line 'image_id' and 'events', a link line 'sentence_id',
    'image_id' and 'event_type' (a line with both ids and 'events' is refused, not read as a link);
    other keys are ignored. An event's 'arguments' may be omitted (mention-only systems) or null,
    which reads the same: no arguments; anything else must be a list. Image ids lose a .jpg or .png
    extension, as in the gold (data.strip_ext). The file is UTF-8; a byte order mark is skipped at
    the start of the file only. Keys must be unique within an object, as in the gold.

    Raises PredictionError (file, line, what is wrong) on anything that cannot be scored; warns
    about ids outside the gold universe, whose events are then scored as false positives, about
    arguments with a role their event type lacks, and about a file with no event and no link."""
    pred, lines = Predictions(), 0
    with open(path, "rb") as f:  # bytes, so that a line that is not UTF-8 gets its line number too
        for number, line in enumerate(f, 1):
            def fail(message: str, number=number):
                raise PredictionError(f"{path}, line {number}: {message}")

            if number == 1:  # as in the gold (data.py): a byte order mark only at the file's start
                line = line.removeprefix(codecs.BOM_UTF8)
            if not line.strip():
                continue
            lines += 1
            try:
                obj = parse_json(line.decode("utf-8"))
            except UnicodeDecodeError:
                fail("not valid UTF-8")
            except json.JSONDecodeError as e:
                fail(f"not valid JSON ({e.msg} at column {e.colno})")
            except ValueError as e:  # a duplicate key, nested too deeply
                fail(f"not valid JSON ({e})")
            if not isinstance(obj, dict):
                fail(f"expected a JSON object, got {type(obj).__name__}")
            _add_line(obj, pred, gold, fail)
    events = sum(map(len, pred.sentences.values())) + sum(map(len, pred.images.values()))
    if not (events or pred.links):
        where = f" in {lines} lines" if lines else ""
        warnings.warn(f"{path}: holds no predictions (no event and no link{where}): every cell "
                      f"scores 0", stacklevel=2)
    unknown = unknown_ids(gold, pred)
    if unknown:
        warnings.warn(f"{path}: {len(unknown)} predicted ids are not in the gold universe "
                      f"(scored as false positives), e.g. {', '.join(unknown[:5])}", stacklevel=2)
    off_type = off_type_roles(pred)
    if off_type:
        warnings.warn(f"{path}: {off_type} arguments have a role that their event type does not "
                      f"have in their modality (scored as false positives)", stacklevel=2)
    return pred


def unknown_ids(gold: M2E2, pred: Predictions) -> list[str]:
    """Sorted predicted sentence and image ids (links included) that the gold does not know."""
    ids = {s for s in pred.sentences if s not in gold.sentences}
    ids |= {i for i in pred.images if i not in gold.images}
    ids |= {x.sentence_id for x in pred.links if x.sentence_id not in gold.sentences}
    ids |= {x.image_id for x in pred.links if x.image_id not in gold.images}
    return sorted(ids)


def off_type_roles(pred: Predictions) -> int:
    """How many predicted arguments have a role that is not one of their event type's roles in their
    modality (a schema role, e.g. 'Artifact' on Life:Die): well-formed, and never a match."""
    text = sum(a.role not in TEXT_ROLES[e.event_type]
               for evs in pred.sentences.values() for e in evs for a in e.arguments)
    return text + sum(a.role not in IMAGE_ROLES[e.event_type]
                      for evs in pred.images.values() for e in evs for a in e.arguments)


# ----------------------------------------------------------------------------- scoring
def iou(a: tuple, b: tuple) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes, continuous areas (no +1); 0 when
    they only touch or either has zero area."""
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match_boxes(pred: list[tuple], gold: list[tuple]) -> int:
    """Greedy one-to-one matching of (event_type, role, box) triples of one image: a pair needs
    the same type and role and IoU >= 0.5; pairs are taken by descending IoU, ties by earlier
    pred, then earlier gold."""
    pairs = []
    for i, (pt, pr, pb) in enumerate(pred):
        for j, (gt, gr, gb) in enumerate(gold):
            if pt == gt and pr == gr:
                v = iou(pb, gb)
                if v >= 0.5:
                    pairs.append((-v, i, j))
    used_pred, used_gold = set(), set()
    for _, i, j in sorted(pairs):
        if i not in used_pred and j not in used_gold:
            used_pred.add(i)
            used_gold.add(j)
    return len(used_pred)


def _tables(sentences: dict, images: dict, links, protocol: Protocol) -> dict:
    """One side (gold or pred) as the tuples every cell is computed from. Text keys keep a fixed
    layout (sid, trigger_start, trigger_end, type, arg_start, arg_end, role); a relaxation blanks
    fields with None."""
    mentions, args = set(), set()
    for sid, events in sentences.items():
        for e in events:
            trigger = (e.trigger.start, None if protocol.trigger_start else e.trigger.end)
            mentions.add((sid, *trigger, e.event_type))
            if protocol.unattached_args:
                trigger = (None, None)
            args.update((sid, *trigger, e.event_type, a.target.start, a.target.end, a.role)
                        for a in e.arguments)
    boxes = {}  # image id -> [(type, role, (x1, y1, x2, y2))], exact duplicates removed, order kept
    for iid, events in images.items():
        triples = ((e.event_type, a.role, (a.target.x1, a.target.y1, a.target.x2, a.target.y2))
                   for e in events for a in e.arguments)
        boxes[iid] = list(dict.fromkeys(triples))
    return {"text_mention": mentions, "text_argument": args,
            "image_mention": {(iid, e.event_type)
                              for iid, events in images.items() for e in events},
            "boxes": boxes, "links": {(x.sentence_id, x.image_id, x.event_type) for x in links}}


def _only_type(tables: dict, t: str) -> dict:
    """The same tables with every event, box and link of another type removed (for --by-type)."""
    return {"text_mention": {k for k in tables["text_mention"] if k[3] == t},
            "text_argument": {k for k in tables["text_argument"] if k[3] == t},
            "image_mention": {k for k in tables["image_mention"] if k[1] == t},
            "boxes": {i: [b for b in bs if b[0] == t] for i, bs in tables["boxes"].items()},
            "links": {k for k in tables["links"] if k[2] == t}}


def _cell(match: int, pred: int, gold: int) -> dict:
    p = match / pred if pred else 0.0
    r = match / gold if gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": round(100 * p, 2), "r": round(100 * r, 2), "f1": round(100 * f1, 2),
            "match": match, "pred": pred, "gold": gold}


def _sets(g: set, p: set) -> tuple[int, int, int]:
    return len(g & p), len(p), len(g)


def _boxes(g: dict, p: dict) -> tuple[int, int, int]:
    match = sum(match_boxes(boxes, g[i]) for i, boxes in p.items() if i in g)
    return match, sum(map(len, p.values())), sum(map(len, g.values()))


def _multimedia_argument(t: dict) -> tuple[set, dict]:
    """Text arguments of the linked sentences' events of the link's type; all boxes of linked
    images, once."""
    linked = {(s, typ) for s, _, typ in t["links"]}
    images = {i for _, i, _ in t["links"]}
    return ({k for k in t["text_argument"] if (k[0], k[3]) in linked},
            {i: bs for i, bs in t["boxes"].items() if i in images})


def _score_tables(g: dict, p: dict, sentences: set | None, images: set | None) -> dict:
    """The six cells; ``sentences`` / ``images`` restrict the text / image cells (None: all)."""
    def keep(table: set, allowed: set | None, index: int) -> set:
        return table if allowed is None else {k for k in table if k[index] in allowed}

    def keep_boxes(boxes: dict) -> dict:
        return boxes if images is None else {i: bs for i, bs in boxes.items() if i in images}

    g_text, g_boxes = _multimedia_argument(g)
    p_text, p_boxes = _multimedia_argument(p)
    text_counts, box_counts = _sets(g_text, p_text), _boxes(g_boxes, p_boxes)
    counts = {
        "text_mention": _sets(keep(g["text_mention"], sentences, 0),
                              keep(p["text_mention"], sentences, 0)),
        "text_argument": _sets(keep(g["text_argument"], sentences, 0),
                               keep(p["text_argument"], sentences, 0)),
        "image_mention": _sets(keep(g["image_mention"], images, 0),
                               keep(p["image_mention"], images, 0)),
        "image_argument": _boxes(keep_boxes(g["boxes"]), keep_boxes(p["boxes"])),
        "multimedia_mention": _sets(g["links"], p["links"]),
        "multimedia_argument": tuple(a + b for a, b in zip(text_counts, box_counts)),
    }
    return {name: _cell(*counts[name]) for name in CELLS}


def _prepare(gold: M2E2, pred: Predictions, protocol: Protocol) -> tuple:
    g = _tables({s.id: s.events for s in gold.sentences.values()},
                {i.id: i.events for i in gold.images.values()}, gold.links, protocol)
    p = _tables(pred.sentences, pred.images, pred.links, protocol)
    sentences = ({s.id for s in gold.sentences.values() if s.events}
                 if protocol.keep_events else None)
    images = {i.id for i in gold.images.values() if i.events} if protocol.gold_images_only else None
    return g, p, sentences, images


def score(gold: M2E2, pred: Predictions, protocol: Protocol = STRICT) -> dict:
    """Score predictions against the gold: the six cells, each {p, r, f1, match, pred, gold}
    (percentages to 2 places), "unknown_ids": how many predicted ids the gold does not know, and
    "off_type_roles": how many predicted arguments have a role their event type lacks (both scored
    as false positives)."""
    g, p, sentences, images = _prepare(gold, pred, protocol)
    return {**_score_tables(g, p, sentences, images), "unknown_ids": len(unknown_ids(gold, pred)),
            "off_type_roles": off_type_roles(pred)}


def score_by_type(gold: M2E2, pred: Predictions, protocol: Protocol = STRICT) -> dict[str, dict]:
    """The six cells per event type: each type scored with everything (events, boxes, links) of the
    other types removed from both sides. Text and image cells add up to score(); multimedia cells
    need not (an image linked under two types counts under both)."""
    g, p, sentences, images = _prepare(gold, pred, protocol)
    return {t: _score_tables(_only_type(g, t), _only_type(p, t), sentences, images)
            for t in EVENT_TYPES}


# ----------------------------------------------------------------------------- command line
def format_table(cells: dict, title: str = "") -> str:
    """The six cells as an aligned text table (rows text / image / multimedia x mention /
    argument)."""
    lines = [f"{title:<32}{'P':>7}{'R':>7}{'F1':>7}{'match':>7}{'pred':>7}{'gold':>7}"]
    for name in CELLS:
        modality, kind = name.split("_")
        c = cells[name]
        label = f"{modality} {'event mention' if kind == 'mention' else 'argument role'}"
        lines.append(f"{label:<32}{c['p']:>7.2f}{c['r']:>7.2f}{c['f1']:>7.2f}{c['match']:>7}"
                     f"{c['pred']:>7}{c['gold']:>7}")
    return "\n".join(lines)


def resolve_gold(data_dir: str | Path, split: str) -> Path:
    """``--data`` may be an M2E2 directory itself or a train.py data root holding
    ``m2e2/{split}``."""
    d = Path(data_dir)
    return d if (d / "text_only_event.json").exists() else d / "m2e2" / split


# The default --data: the toy world train.py trains on (toy.DEFAULT_DATA, which a chapter before
# train.py may not import), from any working directory.
TOY_DATA = str(Path(__file__).resolve().parent / "data" / "toy")


def command_line(description: str) -> argparse.ArgumentParser:
    """The options of every scoring command (this one, and ``python rmpl.py``, which extracts and
    then scores): where the gold is, the protocol's relaxations, the output form."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--gold",
                   help="directory of the M2E2 annotation files (default: from --data, --split)")
    p.add_argument("--data", default=TOY_DATA,
                   help="an M2E2 directory (with images/) or a data root holding m2e2/SPLIT "
                        "(default: the toy world, the repository's data/toy, as train.py's)")
    p.add_argument("--split", default="test", choices=("dev", "test"), help="default %(default)s")
    for f in fields(Protocol):
        p.add_argument("--" + f.name.replace("_", "-"), action="store_true",
                       help=f"relaxation: {f.metadata['help']}")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--by-type", action="store_true", help="also score each event type separately")
    return p



def gold_dir(args: argparse.Namespace) -> Path:
    return Path(args.gold) if args.gold else resolve_gold(args.data, args.split)


def report(gold: M2E2, pred: Predictions, args: argparse.Namespace) -> None:
    """Score under the protocol the command line asks for and print the table (or --json)."""
    protocol = Protocol(**{f.name: getattr(args, f.name) for f in fields(Protocol)})
    result = score(gold, pred, protocol)
    if args.by_type:
        result["by_type"] = score_by_type(gold, pred, protocol)
    if args.json:
        print(json.dumps(result))
        return
    print(f"protocol: {protocol}  ({gold_dir(args)})")
    print(format_table(result))
    for t, cells in result.get("by_type", {}).items():
        print("\n" + format_table(cells, t))


@contextmanager
def warnings_as_lines(stream=None):
    """The readers' counted skips and doubts, printed as one ``warning: ...`` line each (on
    ``stream``, default stderr) once the block is done."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"warning: {w.message}", file=stream or sys.stderr)


def run_command(main) -> None:
    """Run a command's ``main()``. A reader that stops early (``... | head``) closes the pipe: the
    command then ends quietly with status 1 instead of a BrokenPipeError traceback. stdout is
    pointed at /dev/null so that the interpreter's last flush does not fail again."""
    try:
        main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def fail(message) -> None:
    """A bad input ends the command with one line and status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    p = command_line("Score an M2E2 prediction file under the strict protocol or its "
                     "relaxations. (To run a trained model and score it: python rmpl.py.)")
    p.add_argument("--pred", required=True,
                   help="the prediction file to score, JSON Lines (one line per sentence, image "
                        "or multimedia link; format: load_predictions)")
    args = p.parse_args(argv)

    def read() -> tuple[M2E2, Predictions]:
        if not Path(args.pred).is_file():
            raise ValueError(f"--pred {args.pred}: no such file")
        gold = read_m2e2(gold_dir(args))
        return gold, load_predictions(args.pred, gold)

    try:
        with warnings_as_lines():
            gold, pred = read()
    except (OSError, ValueError) as e:  # PredictionError, DataError, a missing file
        fail(e)
    report(gold, pred, args)


if __name__ == "__main__":
    run_command(main)
